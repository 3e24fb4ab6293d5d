package filequeue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog"
)

// Dead letters: the messages a tern.QueuePublisher gave up on when no dead-letter callback
// was set. They live in a segment log of their own in DIR/dead (same framing as the
// queue), created by the first DeadLetter, so the queue's own segments are deleted as
// usual while dead letters stay until the user removes them. Records, version 1:
//
//	type 3, dead:    set-aside time i64 (Unix ns), reason (uvarint length + bytes),
//	                 then the entry exactly as a type 1 entry record (seq, time, message)
//	type 4, removed: seq u64
//
// The dead log is synced on every write whatever the queue's sync policy: a dead letter
// is written durably before the publisher acknowledges the entry in the queue, so a crash
// in between leaves the message in both (it is retried, and set aside again under the
// same sequence number, which is stored once), never in neither. Once every dead letter
// has been removed, the log's segment files are deleted.
const (
	typeDead    byte = 3
	typeRemoved byte = 4

	deadDirName = "dead"
)

// deadStore is the dead-letter log. Its own lock; never taken under Queue.mu.
type deadStore struct {
	mu     sync.Mutex
	dir    string
	cfg    config
	log    *seglog.Log       // nil until the directory exists
	live   map[uint64]uint64 // seq of each dead letter not removed -> its record's segment
	closed bool
}

// open opens the dead-letter log in dir; with create false only if the directory exists.
// Called under mu, or before the queue is shared.
func (d *deadStore) open(create bool) error {
	if d.log != nil {
		return nil
	}
	if _, err := d.cfg.FS.ReadDir(d.dir); err != nil && !create {
		return nil // no dead letters were ever stored
	}
	d.live = make(map[uint64]uint64)
	opt := d.cfg.LogOptions(formatVersion)
	opt.Sync = seglog.SyncPolicy{Mode: seglog.SyncEvery}
	opt.Replay = d.replay
	opt.Manifest = true // a dead-letter segment gone missing is reported, not ignored
	log, err := seglog.Open(d.dir, opt)
	if errors.Is(err, seglog.ErrLocked) {
		return fmt.Errorf("%w: %s", ErrLocked, d.dir)
	}
	if err != nil {
		return fmt.Errorf("filequeue: open dead letters: %w", err)
	}
	d.log = log
	return nil
}

func (d *deadStore) replay(r seglog.Record) error {
	if r.Version > formatVersion {
		return fmt.Errorf("%w: version %d at %v in %s", ErrVersion, r.Version, r.Pos, d.dir)
	}
	switch r.Type {
	case typeDead:
		var dl tern.DeadLetter
		if decodeDead(r.Payload, &dl) == nil {
			d.live[dl.Entry.Seq] = r.Pos.Seg
		}
	case typeRemoved:
		if len(r.Payload) == ackPayload {
			delete(d.live, binary.LittleEndian.Uint64(r.Payload))
		}
	}
	return nil
}

func encodeDead(dst []byte, e *tern.QueueEntry, at time.Time, reason string) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(at.UnixNano()))
	dst = appendString(dst, reason)
	start := len(dst)
	dst = encodeEntry(dst, &e.Message)
	patchEntry(dst[start:], e.Seq, e.Time)
	return dst
}

func decodeDead(b []byte, dl *tern.DeadLetter) error {
	if len(b) < 8 {
		return errMalformed
	}
	at := int64(binary.LittleEndian.Uint64(b))
	d := decoder{b: b[8:]}
	reason := d.field()
	if d.err != nil {
		return d.err
	}
	if err := decodeEntry(d.b, &dl.Entry); err != nil {
		return err
	}
	dl.Reason, dl.Time = string(reason), time.Unix(0, at)
	return nil
}

// DeadLetter implements tern.DeadLetterQueue: it stores e with the reason in the
// dead-letter log (DIR/dead), synced before it returns, whatever the sync policy. An entry
// whose sequence number is already stored is kept once. Safe for concurrent use; calls
// are serialised (dead letters are rare).
func (q *Queue) DeadLetter(e tern.QueueEntry, reason error) error {
	d := &q.dead
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return tern.ErrQueueClosed
	}
	if err := d.open(true); err != nil {
		return err
	}
	if _, ok := d.live[e.Seq]; ok {
		return nil
	}
	var why string
	if reason != nil {
		why = reason.Error()
	}
	t, err := d.log.Add(typeDead, encodeDead(nil, &e, time.Now(), why))
	if err != nil {
		return fmt.Errorf("filequeue: dead letter: %w", err)
	}
	if err := d.log.Wait(context.Background(), t, true); err != nil {
		return fmt.Errorf("filequeue: dead letter: %w", err)
	}
	d.live[e.Seq] = t.Pos.Seg
	return nil
}

// DeadLetters returns the stored dead letters, oldest first, read from disk. Cost: one
// pass over the dead-letter log; memory for every dead letter returned.
func (q *Queue) DeadLetters() ([]tern.DeadLetter, error) {
	d := &q.dead
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, tern.ErrQueueClosed
	}
	if d.log == nil || len(d.live) == 0 {
		return nil, nil
	}
	r := d.log.NewReader(seglog.Pos{})
	defer r.Close()
	var out []tern.DeadLetter
	seen := make(map[uint64]bool, len(d.live))
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("filequeue: read dead letters: %w", err)
		}
		var dl tern.DeadLetter
		if rec.Type != typeDead || decodeDead(rec.Payload, &dl) != nil {
			continue
		}
		if _, ok := d.live[dl.Entry.Seq]; ok && !seen[dl.Entry.Seq] {
			seen[dl.Entry.Seq] = true
			out = append(out, dl)
		}
	}
}

// RemoveDeadLetter forgets the dead letter with sequence number seq, durably before it
// returns; removing one that is not there is harmless. When none is left, the dead-letter
// log's files are deleted.
func (q *Queue) RemoveDeadLetter(seq uint64) error {
	d := &q.dead
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return tern.ErrQueueClosed
	}
	if _, ok := d.live[seq]; !ok {
		return nil
	}
	var payload [ackPayload]byte
	binary.LittleEndian.PutUint64(payload[:], seq)
	t, err := d.log.Add(typeRemoved, payload[:])
	if err == nil {
		err = d.log.Wait(context.Background(), t, true)
	}
	if err != nil {
		return fmt.Errorf("filequeue: remove dead letter: %w", err)
	}
	delete(d.live, seq)
	if len(d.live) > 0 {
		return nil
	}
	ord, err := d.log.Seal(context.Background())
	if err == nil && ord > 0 {
		_, err = d.log.RemoveThrough(ord, nil)
	}
	if err != nil {
		return fmt.Errorf("filequeue: delete dead-letter segments: %w", err)
	}
	return nil
}

// close closes the dead-letter log if it was opened.
func (d *deadStore) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.log == nil {
		return nil
	}
	if err := d.log.Close(); err != nil {
		return fmt.Errorf("filequeue: close dead letters: %w", err)
	}
	return nil
}

func deadDir(dir string) string { return filepath.Join(dir, deadDirName) }

// Compile-time check.
var _ tern.DeadLetterQueue = (*Queue)(nil)
