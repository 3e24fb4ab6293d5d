// Package msgpack is a tern.Codec for MessagePack, on github.com/vmihailenco/msgpack/v5.
//
//	t := tern.NewTyped(client, msgpack.Codec[Reading]{})
//
// Field names follow the `msgpack` struct tag, else the Go field name (see the library's
// documentation for its options).
package msgpack

import (
	"github.com/vmihailenco/msgpack/v5"
)

// ContentType is the Content Type that Typed publishes MessagePack payloads with.
const ContentType = "application/msgpack"

// Codec encodes values of type T as MessagePack. The zero value is ready; it holds no state
// and is safe for concurrent use. Each Encode allocates the payload; Decode allocates what T
// needs and keeps no reference to its input.
type Codec[T any] struct{}

// Encode returns the MessagePack encoding of v.
func (Codec[T]) Encode(v T) ([]byte, error) { return msgpack.Marshal(v) }

// Decode parses data into a new T.
func (Codec[T]) Decode(data []byte) (T, error) {
	var v T
	err := msgpack.Unmarshal(data, &v)
	return v, err
}

// ContentType returns "application/msgpack".
func (Codec[T]) ContentType() string { return ContentType }
