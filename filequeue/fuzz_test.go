package filequeue

import (
	"reflect"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packet"
)

// FuzzDecodeEntry: any bytes either fail to decode or decode to an entry that encodes and
// decodes back to the same entry; nothing panics.
func FuzzDecodeEntry(f *testing.F) {
	full := encodeEntry(nil, &tern.PublishOptions{
		Topic: "a/b", Payload: []byte("x"), QoS: 2, Retain: true, PayloadFormat: 1,
		MessageExpiry: time.Minute, ContentType: "c", ResponseTopic: "r", CorrelationData: []byte{1},
		UserProperties: []packet.UserProperty{{Key: "k", Value: "v"}},
	})
	patchEntry(full, 42, time.Unix(1, 2))
	f.Add(full)
	f.Add(full[:len(full)-1])
	f.Add(encodeEntry(nil, &tern.PublishOptions{}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var e tern.QueueEntry
		if decodeEntry(b, &e) != nil {
			return
		}
		if decodeEntry(b, nil) != nil {
			t.Fatal("checking and decoding disagree")
		}
		again := encodeEntry(nil, &e.Message)
		patchEntry(again, e.Seq, e.Time)
		var e2 tern.QueueEntry
		if err := decodeEntry(again, &e2); err != nil || e2.Seq != e.Seq || !e2.Time.Equal(e.Time) ||
			!reflect.DeepEqual(e2.Message, e.Message) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, e, e2)
		}
	})
}
