// Package json is a tern.Codec for JSON, on the standard library's encoding/json.
//
//	t := tern.NewTyped(client, json.Codec[Reading]{})
//	err := t.Publish(ctx, tern.PublishOptions{Topic: "sensors/a1", QoS: 1}, Reading{Temp: 21.5})
//
// The package name shadows encoding/json; import it under another name where both are used.
package json

import stdjson "encoding/json"

// ContentType is the Content Type that Typed publishes JSON payloads with.
const ContentType = "application/json"

// Codec encodes values of type T as JSON with encoding/json's rules (struct tags, Marshaler
// and Unmarshaler). The zero value is ready; it holds no state and is safe for concurrent
// use. Each Encode allocates the payload; Decode allocates what T needs.
type Codec[T any] struct{}

// Encode returns the JSON encoding of v.
func (Codec[T]) Encode(v T) ([]byte, error) { return stdjson.Marshal(v) }

// Decode parses data into a new T. It keeps no reference to data.
func (Codec[T]) Decode(data []byte) (T, error) {
	var v T
	err := stdjson.Unmarshal(data, &v)
	return v, err
}

// ContentType returns "application/json".
func (Codec[T]) ContentType() string { return ContentType }
