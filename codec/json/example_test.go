package json_test

import (
	"fmt"
	"log"

	"github.com/ternmq/tern/codec/json"
)

// The codec on its own; with a client it goes to tern.NewTyped(client, json.Codec[T]{}).
func ExampleCodec() {
	type reading struct {
		Device string  `json:"device"`
		Temp   float64 `json:"temp"`
	}
	codec := json.Codec[reading]{}
	b, err := codec.Encode(reading{Device: "a1", Temp: 21.5})
	if err != nil {
		log.Fatal(err)
	}
	v, err := codec.Decode(b)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(b), codec.ContentType(), v.Device)
	// Output: {"device":"a1","temp":21.5} application/json a1
}
