package filequeue

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog"
)

// The sequence high-water mark. The log's manifest (internal/seglog) holds the queue's
// hwm: a reservation of sequence numbers and the floor of the last segment removal. No
// sequence number above the durable reservation is ever handed out (returned by Enqueue
// or Read), and Open resumes numbering above it, so a torn, cut or deleted tail cannot make
// a number come back. Reservations run reserveAhead numbers ahead and are renewed when
// half is used, by one Enqueue while the others go on; Close lowers the reservation to the
// last number used, so a clean restart numbers on without a gap.

// reserveAhead is how far a reservation runs ahead: after a crash numbering resumes up to
// this much above the last number used. Renewing costs one manifest write (two fsyncs)
// per reserveAhead/2 entries.
const reserveAhead = 1 << 20

// resume runs at Open after replay: numbering goes on above every sequence number an
// entry, an acknowledgement or the reservation names; what missing segments held is
// reported; and a new reservation is written before anything is handed out.
func (q *Queue) resume(ackAbove uint64, newest byte) error {
	h, err := decodeHWM(q.log.Meta())
	if err != nil {
		return fmt.Errorf("filequeue: open: manifest: %w", err)
	}
	if !q.log.HadManifest() && newest >= 2 {
		q.report(Corruption{Path: filepath.Join(q.dir, "MANIFEST"), Reason: "manifest missing " +
			"from a directory that had one: segments lost at the front or the end cannot be told, " +
			"nor sequence numbers handed out above the surviving entries"})
	}
	q.reportGaps(h)
	// Numbers acknowledged past the last entry belong to entries lost to damage, and
	// numbers up to the reservation may have been handed out: never hand them out again.
	if top := max(ackAbove, h.reserved); top > q.last {
		q.missing = append(q.missing, seqRange{q.last + 1, top})
		q.last = top
		q.advanceFloorLocked()
	}
	q.trimFloor = h.floor
	next := hwm{reserved: q.last + reserveAhead, floor: h.floor}
	if err := q.log.SetMeta(next.encode()); err != nil {
		return fmt.Errorf("filequeue: open: reserve sequence numbers: %w", err)
	}
	q.reserved = next.reserved
	return nil
}

// reserve makes sure a durable reservation covers seq, and renews it when less than
// reserveAhead/2 is left. A caller past the reservation waits for the write (bounded by
// ctx); one that only finds it running low renews it unless another caller is already.
func (q *Queue) reserve(ctx context.Context, seq uint64) error {
	q.mu.Lock()
	covered := seq <= q.reserved
	q.mu.Unlock()
	if covered {
		select {
		case q.metaTok <- struct{}{}:
		default:
			return nil // being renewed
		}
	} else {
		select {
		case q.metaTok <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer func() { <-q.metaTok }()
	q.mu.Lock()
	if q.closed || seq+reserveAhead/2 <= q.reserved {
		covered, closed := seq <= q.reserved, q.closed
		q.mu.Unlock()
		if !covered && closed {
			return tern.ErrQueueClosed
		}
		return nil
	}
	h := hwm{reserved: max(q.last, seq) + reserveAhead, floor: q.trimFloor}
	q.mu.Unlock()
	if err := q.log.SetMeta(h.encode()); err != nil {
		return fmt.Errorf("reserve sequence numbers: %w", err)
	}
	q.mu.Lock()
	q.reserved = max(q.reserved, h.reserved)
	q.mu.Unlock()
	return nil
}

// settleReservation lowers the reservation to the last number used, at Close (no number is
// handed out any more), so that the next Open numbers on without a gap.
func (q *Queue) settleReservation() error {
	q.metaTok <- struct{}{}
	defer func() { <-q.metaTok }()
	q.mu.Lock()
	h := hwm{reserved: q.last, floor: q.trimFloor}
	q.mu.Unlock()
	return q.log.SetMeta(h.encode())
}

// reportGaps tells, in sequence numbers, what each run of missing segments held: the
// entries between the last one before the run (or the floor of the last removal, for a
// run at the front) and the first one after it (or the reservation, for a run at the end)
// that had not been acknowledged are lost. The log reported the segments themselves.
func (q *Queue) reportGaps(h hwm) {
	for _, g := range q.log.Gaps() {
		prev, next := h.floor, uint64(0)
		for _, s := range q.segs {
			if s.ord < g.First {
				prev = max(prev, s.last)
			} else if s.ord > g.Last && s.entries > 0 && next == 0 {
				next = s.index[0].seq
			}
		}
		var reason string
		switch {
		case next == 0 && h.reserved > prev:
			reason = fmt.Sprintf("entries %d to at most %d, those not acknowledged, lost with "+
				"segments %d to %d at the end of the queue", prev+1, h.reserved, g.First, g.Last)
		case next == 0:
			reason = fmt.Sprintf("entries above %d, if any, lost with segments %d to %d at the "+
				"end of the queue", prev, g.First, g.Last)
		case next > prev+1:
			reason = fmt.Sprintf("entries %d to %d, those not acknowledged, lost with segments "+
				"%d to %d", prev+1, next-1, g.First, g.Last)
		default:
			continue // the run held acknowledgements only
		}
		q.report(Corruption{Segment: g.First, Path: seglog.SegmentPath(q.dir, g.First), Reason: reason})
	}
}
