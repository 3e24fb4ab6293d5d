package tern

import (
	"slices"
	"sync"
	"time"
)

// Store keeps the session state that must outlive the process: outbound QoS 1/2 publishes
// not yet completed, and inbound QoS 2 exchanges not yet released. With a Store, a client
// restarted after a crash resumes its session where it stopped: it resends what the broker
// may not have, continues QoS 2 exchanges past PUBREC, and does not deliver again a QoS 2
// message it had already received.
//
// The write-ahead contract, which the client keeps and a Store may rely on:
//
//   - An outbound PUBLISH is Put (RecordPublish) before its first byte is written.
//   - On PUBREC, the record is replaced by a RecordReleased with the same ID before PUBREL
//     is written; the message itself is no longer needed. With an AsyncStore the record goes
//     through PutAsync and PUBREL waits for its done.
//   - On PUBACK or PUBCOMP (or a refusal), the outbound record is deleted. Delete need not
//     be durable when it returns: a deletion lost in a crash only means a resend the broker
//     answers harmlessly.
//   - An inbound QoS 2 PUBLISH is Put (RecordInbound) once the application has acknowledged
//     it and before PUBREC is written, so after a restart a resend of it is recognised and
//     not delivered again, and a message the application never took is delivered again.
//   - On PUBREL the inbound record is deleted before PUBCOMP is written.
//   - When the broker reports the session gone (Session Present 0), Reset is called before
//     anything is sent on that connection. Reset drops the inbound and RecordReleased
//     records, which describe exchanges the broker has forgotten; RecordPublish records stay,
//     because the client publishes them again (or fails and deletes them, by policy).
//
// Put returns once the record is as durable as the Store promises; calls come from many
// goroutines at once and never under the client's locks, so a file store can commit many
// records with one sync. Records are ordered by Seq, which the client assigns.
type Store interface {
	Put(r StoreRecord) error
	Delete(kind RecordKind, id uint16) error
	Load() ([]StoreRecord, error)
	Reset() error
	Close() error
}

// RecordKind says what a StoreRecord holds. Outbound kinds share one packet identifier
// space; RecordInbound has its own.
type RecordKind uint8

const (
	// RecordPublish is an outbound PUBLISH awaiting PUBACK or PUBREC; Packet holds it.
	RecordPublish RecordKind = iota + 1
	// RecordReleased is an outbound QoS 2 message past PUBREC, awaiting PUBCOMP.
	RecordReleased
	// RecordInbound is an inbound QoS 2 message received and not yet released by PUBREL.
	RecordInbound
)

// outbound reports whether the kind belongs to the outbound identifier space.
func (k RecordKind) outbound() bool { return k == RecordPublish || k == RecordReleased }

// StoreRecord is one unit of session state.
type StoreRecord struct {
	Kind   RecordKind
	ID     uint16    // packet identifier
	Seq    uint64    // position in the client's send order
	Packet []byte    // the encoded PUBLISH, for RecordPublish; valid only during Put: copy it
	Time   time.Time // when the record was first stored
}

// MemoryStore is a Store in memory: state survives reconnects but not the process. It is the
// reference for the contract and useful in tests. Safe for concurrent use.
type MemoryStore struct {
	mu  sync.Mutex
	out map[uint16]StoreRecord
	in  map[uint16]StoreRecord
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{out: make(map[uint16]StoreRecord), in: make(map[uint16]StoreRecord)}
}

func (s *MemoryStore) table(kind RecordKind) map[uint16]StoreRecord {
	if kind.outbound() {
		return s.out
	}
	return s.in
}

// Put implements Store. A RecordReleased keeps the Seq and Time of the publish it replaces.
func (s *MemoryStore) Put(r StoreRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.table(r.Kind)
	if old, ok := t[r.ID]; ok && r.Kind == RecordReleased && old.Kind == RecordPublish {
		r.Seq, r.Time = old.Seq, old.Time
	}
	r.Packet = slices.Clone(r.Packet)
	t[r.ID] = r
	return nil
}

// Delete implements Store.
func (s *MemoryStore) Delete(kind RecordKind, id uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.table(kind), id)
	return nil
}

// Load implements Store: every record, outbound first, each group in Seq order.
func (s *MemoryStore) Load() ([]StoreRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []StoreRecord
	for _, t := range []map[uint16]StoreRecord{s.out, s.in} {
		start := len(out)
		for _, r := range t {
			r.Packet = slices.Clone(r.Packet)
			out = append(out, r)
		}
		slices.SortFunc(out[start:], func(a, b StoreRecord) int {
			switch {
			case a.Seq < b.Seq:
				return -1
			case a.Seq > b.Seq:
				return 1
			}
			return 0
		})
	}
	return out, nil
}

// Reset implements Store.
func (s *MemoryStore) Reset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, r := range s.out {
		if r.Kind != RecordPublish {
			delete(s.out, id)
		}
	}
	clear(s.in)
	return nil
}

// Close implements Store.
func (s *MemoryStore) Close() error { return nil }
