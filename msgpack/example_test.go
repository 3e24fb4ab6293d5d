package msgpack_test

import (
	"fmt"
	"log"

	"github.com/ternmq/tern/msgpack"
)

// The codec on its own; with a client it goes to tern.NewTyped(client, msgpack.Codec[T]{}).
func ExampleCodec() {
	type reading struct {
		Device string  `msgpack:"device"`
		Temp   float64 `msgpack:"temp"`
	}
	codec := msgpack.Codec[reading]{}
	b, err := codec.Encode(reading{Device: "a1", Temp: 21.5})
	if err != nil {
		log.Fatal(err)
	}
	v, err := codec.Decode(b)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(b), "bytes,", codec.ContentType(), v.Device, v.Temp)
	// Output: 25 bytes, application/msgpack a1 21.5
}
