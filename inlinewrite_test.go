package tern

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/ternmq/tern/internal/brokertest"
)

// writeCounts is a snapshot of the live connection's writer counters.
type writeCounts struct{ loop, inline, handovers uint64 }

func writerCounts(c *Client) writeCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.conn.w
	return writeCounts{w.loopWrites.Load(), w.inlineWrites.Load(), w.handovers.Load()}
}

// loopWritesSince checks that the writer goroutine wrote nothing since before, except the
// rest of inline writes the socket took only in part (the only hand-over the design keeps
// for the read loop's acknowledgements).
func loopWritesSince(t *testing.T, c *Client, before writeCounts, what string) {
	t.Helper()
	after := writerCounts(c)
	loop, handovers := after.loop-before.loop, after.handovers-before.handovers
	if loop > handovers {
		t.Errorf("%s: the writer goroutine wrote %d times (%d hand-overs, %d inline writes), "+
			"want only hand-overs", what, loop, handovers, after.inline-before.inline)
	}
	if after.inline == before.inline {
		t.Errorf("%s: no inline write", what)
	}
}

// TestReadLoopWritesItsAcks: the acknowledgements a read batch causes (PUBACK, PUBREC and
// PUBCOMP of an inline subscription, PUBREL for the client's own QoS 2 publishes) leave from
// the read loop in one non-blocking write when the writer is idle, not by waking the writer
// goroutine once per batch. Real Mosquitto, QoS 1 and 2, every message exactly once.
func TestReadLoopWritesItsAcks(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	const n = 300
	var got [3][n]atomic.Int32
	var count atomic.Int32
	done := make(chan struct{})
	sub := newTestClient(t, b.URL)
	_, err := sub.SubscribeCallback(ctx, []TopicFilter{{Topic: "inl/#", QoS: 2}}, func(m *Message) {
		var q, i int
		fmt.Sscanf(string(m.Payload), "%d %d", &q, &i)
		got[q][i].Add(1)
		if count.Add(1) == 2*n {
			close(done)
		}
	}, SubInline())
	if err != nil {
		t.Fatal(err)
	}
	pub := newTestClient(t, b.URL)
	before := writerCounts(sub)
	for q := byte(1); q <= 2; q++ {
		for i := range n {
			if _, err := pub.PublishAsync(ctx, PublishOptions{Topic: "inl/x", QoS: q,
				Payload: fmt.Appendf(nil, "%d %d", q, i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("received %d of %d", count.Load(), 2*n)
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for q := 1; q <= 2; q++ {
		for i := range n {
			if c := got[q][i].Load(); c != 1 {
				t.Fatalf("QoS %d message %d received %d times", q, i, c)
			}
		}
	}
	loopWritesSince(t, sub, before, "subscriber")
}
