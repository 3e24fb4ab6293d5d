package filestore_test

import (
	"fmt"
	"os"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filestore"
)

// The session state a client stored is there after a restart.
func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "store-example-")
	defer os.RemoveAll(dir)

	s, err := filestore.Open(dir, filestore.WithTTL(24*time.Hour))
	if err != nil {
		fmt.Println(err)
		return
	}
	s.Put(tern.StoreRecord{Kind: tern.RecordPublish, ID: 1, Seq: 1, Packet: []byte("first")})
	s.Put(tern.StoreRecord{Kind: tern.RecordPublish, ID: 2, Seq: 2, Packet: []byte("second")})
	s.Put(tern.StoreRecord{Kind: tern.RecordReleased, ID: 2}) // PUBREC came for id 2
	s.Delete(tern.RecordPublish, 1)                           // PUBACK came for id 1
	s.Close()

	s, _ = filestore.Open(dir)
	defer s.Close()
	recs, _ := s.Load()
	for _, r := range recs {
		fmt.Println(r.Kind == tern.RecordReleased, r.ID, r.Seq)
	}
	// Output:
	// true 2 2
}
