package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filequeue"
	"github.com/ternmq/tern/filestore"
)

// exitInterrupted is the exit status of a run the user interrupted (128 + SIGINT), as
// shells report it.
const exitInterrupted = 130

// sessionDir is the directory in DIR where pub --queue -c keeps the session's in-flight
// state. The broker keeps a persistent session's QoS 2 exchanges that a killed run left
// open (PUBREC sent, PUBREL not yet received), and they count against its Receive Maximum
// until they are released: a run that did not know them would be refused with 0x97 forever,
// or would reuse one of their packet ids and have its new message taken for a resend. With
// the state on disk the next run resumes the session and finishes them first.
const sessionDir = "session"

// errInterrupted ends a run the user interrupted before its input was all accepted.
var errInterrupted = errors.New("interrupted")

// runSpool is tern pub --queue DIR: store and forward. Each input message is stored in the
// durable queue in DIR (fsynced) before it counts as accepted; a tern.QueuePublisher sends
// what the queue holds, in order, whenever a connection is up, messages left by an earlier
// run first. After the input ends it keeps sending until the queue is empty, --drain-timeout
// passes or the user interrupts, then reports how many messages were delivered and how many
// wait in DIR for the next run. A crash (kill -9) at any point loses nothing that was
// accepted: the next run sends it (possibly again: at least once).
//
// A refusal by the broker never deletes a message: the drain pauses (backoff) and the
// message stays in DIR; with --max-attempts N, a message refused N times is set aside in
// DIR/dead (filequeue's dead-letter store), where it stays until the user removes it.
func runSpool(ctx context.Context, f *pubFlags, tmpl tern.PublishOptions, stdout, stderr io.Writer) error {
	opts, err := f.clientOptions(tern.WithBackgroundConnect()) // storing never waits for the broker
	if err != nil {
		return err
	}
	if f.conn.persistent {
		// The broker keeps the session, with the QoS 1/2 exchanges this run leaves open,
		// for the next run: so must we, or the next run cannot finish them (sessionDir).
		st, err := filestore.Open(filepath.Join(f.queue, sessionDir))
		if err != nil {
			return fmt.Errorf("--queue: %w", err)
		}
		defer st.Close()
		opts = append(opts, tern.WithStore(st))
	}
	if f.maxAttempts < 0 {
		return usagef("--max-attempts %d: want 0 (never give up) or more", f.maxAttempts)
	}
	q, err := filequeue.Open(f.queue)
	if err != nil {
		return fmt.Errorf("--queue: %w", err)
	}
	defer q.Close()
	waitingBefore := q.Stats().Depth
	deadBefore, err := deadSeqs(q)
	if err != nil {
		return err
	}
	cl, err := connect(ctx, opts)
	if err != nil {
		return err
	}
	defer disconnect(cl)
	pauses := &pauseReporter{w: stderr, dir: f.queue}
	// No dead-letter callback: what is given up goes to the queue's own store in DIR/dead,
	// durably, before it leaves the queue.
	qp, err := tern.NewQueuePublisher(cl, q, tern.WithQueueOnPause(pauses.report),
		tern.WithQueueMaxAttempts(f.maxAttempts))
	if err != nil {
		return err
	}

	accepted, ierr := spoolInput(ctx, f, tmpl, qp, stdout)
	inputDone := ierr == nil
	if ierr == nil {
		ierr = drainQueue(ctx, qp, f.drainTimeout)
	}
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	qp.Close(cctx)
	cancel()
	st := qp.Stats()
	waiting := q.Stats().Depth
	state := ""
	if ctx.Err() != nil {
		state = "interrupted: "
	}
	fmt.Fprintf(stderr, "tern pub: %saccepted %d, delivered %d, waiting %d in %s (%d were waiting at the start)\n",
		state, accepted, st.Delivered, waiting, f.queue, waitingBefore)
	newDead, err := reportDead(q, deadBefore, stderr, f.queue)
	if err != nil {
		return err
	}
	if waiting > 0 && st.LastError != nil && st.Pauses == 0 {
		fmt.Fprintf(stderr, "tern pub: last error: %v\n", st.LastError)
	}
	switch {
	case ctx.Err() != nil && !inputDone:
		return errInterrupted // what was accepted is stored; the rest of the input was not read
	case ierr != nil && !errors.Is(ierr, context.Canceled):
		return ierr
	case newDead > 0:
		return fmt.Errorf("%d queued messages set aside in %s after %d refusals each",
			newDead, filepath.Join(f.queue, "dead"), f.maxAttempts)
	case waiting > 0 && st.Pauses > 0:
		return fmt.Errorf("the broker refused queued messages %d times (last: %v); they wait in %s",
			st.Pauses, st.LastError, f.queue)
	}
	return nil // drained, or interrupted while draining: what was accepted is stored
}

// pauseReporter prints one line when the drain pauses on a refusal, and again only when
// the refused message or the reason changes, so a backoff that repeats is not a flood.
type pauseReporter struct {
	w   io.Writer
	dir string

	mu   sync.Mutex
	last string
}

func (p *pauseReporter) report(e tern.QueueEntry, err error) {
	key := fmt.Sprintf("%d %v", e.Seq, err)
	p.mu.Lock()
	defer p.mu.Unlock()
	if key == p.last {
		return
	}
	p.last = key
	fmt.Fprintf(p.w, "tern pub: paused: the broker refuses queued message %d (topic %q, %d bytes): %v; it stays in %s and is tried again\n",
		e.Seq, e.Message.Topic, len(e.Message.Payload), err, p.dir)
}

// deadSeqs returns the sequence numbers of the dead letters DIR/dead holds.
func deadSeqs(q *filequeue.Queue) (map[uint64]bool, error) {
	dls, err := q.DeadLetters()
	if err != nil {
		return nil, fmt.Errorf("--queue: %w", err)
	}
	seqs := make(map[uint64]bool, len(dls))
	for _, dl := range dls {
		seqs[dl.Entry.Seq] = true
	}
	return seqs, nil
}

// reportDead prints the dead letters set aside during this run, one line each, and how
// many earlier ones wait in DIR/dead; it returns the number set aside now.
func reportDead(q *filequeue.Queue, before map[uint64]bool, w io.Writer, dir string) (int, error) {
	dls, err := q.DeadLetters()
	if err != nil {
		return 0, fmt.Errorf("--queue: %w", err)
	}
	dead, earlier := filepath.Join(dir, "dead"), 0
	n := 0
	for _, dl := range dls {
		if before[dl.Entry.Seq] {
			earlier++
			continue
		}
		n++
		fmt.Fprintf(w, "tern pub: set aside message %d (topic %q, %d bytes) in %s: %s\n",
			dl.Entry.Seq, dl.Entry.Message.Topic, len(dl.Entry.Message.Payload), dead, dl.Reason)
	}
	if earlier > 0 {
		fmt.Fprintf(w, "tern pub: %d messages set aside by earlier runs wait in %s\n", earlier, dead)
	}
	return n, nil
}

// spoolInput stores every input message in the queue; with --print-stored each stored
// message is confirmed on stdout as "stored N" (N counts input messages from 1 in this run)
// once it is durable. It returns how many were stored.
func spoolInput(ctx context.Context, f *pubFlags, tmpl tern.PublishOptions, qp *tern.QueuePublisher, stdout io.Writer) (int, error) {
	n := 0
	var failed error
	pace := newPacer(f)
	err := f.messages(ctx, func(payload []byte) bool {
		if failed = pace.wait(ctx); failed != nil {
			return false
		}
		m := tmpl
		m.Payload = append([]byte(nil), payload...)
		if failed = qp.Publish(ctx, m); failed != nil {
			failed = fmt.Errorf("store message %d: %w", n+1, failed)
			return false
		}
		n++
		if f.printStored {
			fmt.Fprintf(stdout, "stored %d\n", n)
		}
		return true
	})
	if err == nil {
		err = failed
	}
	return n, err
}

// drainQueue waits until the queue is empty, limit passes or ctx ends.
func drainQueue(ctx context.Context, qp *tern.QueuePublisher, limit time.Duration) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if st := qp.Stats(); st.Depth == 0 && st.InFlight == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return nil // what is left waits for the next run; the report says how much
		case <-tick.C:
		}
	}
}
