package tern

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
)

// The resumed-session test runs the subscriber in two child processes of the test binary,
// selected by these variables, so that nothing of the first process's memory can help the
// second.
const (
	resumeRoleEnv   = "TERN_RESUME_ROLE"   // "first" or "second"
	resumeBrokerEnv = "TERN_RESUME_BROKER" // broker URL
	resumeIDEnv     = "TERN_RESUME_ID"     // client identifier shared by both processes
	resumeCountEnv  = "TERN_RESUME_COUNT"  // messages the second process must receive
)

// TestResumeChild is the body of the child processes; it does nothing in a normal run.
func TestResumeChild(t *testing.T) {
	role := os.Getenv(resumeRoleEnv)
	if role == "" {
		t.Skip("runs only as a child of TestResumedSessionDeliversQueued")
	}
	broker, id := os.Getenv(resumeBrokerEnv), os.Getenv(resumeIDEnv)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := New(WithBroker(broker), WithClientID(id), WithCleanStart(false),
		WithSessionExpiry(time.Hour), WithStats())
	if err != nil {
		t.Fatal(err)
	}
	filter := []TopicFilter{{Topic: "resume/" + id + "/#", QoS: 1}}
	switch role {
	case "first":
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Subscribe(ctx, filter); err != nil {
			t.Fatal(err)
		}
		// A graceful exit: the session, with its subscription, outlives the process.
		if err := c.Disconnect(ctx); err != nil {
			t.Fatal(err)
		}
		fmt.Println("RESUME first done")
	case "second":
		want, _ := strconv.Atoi(os.Getenv(resumeCountEnv))
		// Subscribed before Connect: the broker delivers the queued messages right after
		// CONNACK, and they must find the route.
		ch, sub, err := c.Subscribe(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		seen := make(map[string]bool, want)
		for len(seen) < want {
			select {
			case m := <-ch:
				seen[string(m.Payload)] = true
				m.Ack()
			case <-ctx.Done():
				t.Errorf("received %d of %d", len(seen), want)
				want = -1
			}
			if want < 0 {
				break
			}
		}
		if err := sub.Wait(ctx); err != nil {
			t.Errorf("SUBACK: %v", err)
		}
		st := c.Stats()
		fmt.Printf("RESUME second session_present=%v received=%d unrouted=%d granted=%d\n",
			c.Info().SessionPresent, len(seen), st.Unrouted, sub.Results()[0].GrantedQoS)
		// End the session so the broker keeps nothing.
		zero := time.Duration(0)
		c.DisconnectWith(ctx, DisconnectOptions{SessionExpiry: &zero})
	}
}

// runResumeChild runs TestResumeChild in a new process with role and returns the line it
// printed for the parent.
func runResumeChild(t *testing.T, role, broker, id string, n int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestResumeChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), resumeRoleEnv+"="+role, resumeBrokerEnv+"="+broker,
		resumeIDEnv+"="+id, resumeCountEnv+"="+strconv.Itoa(n))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var line string
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "RESUME "+role) {
			line = sc.Text()
		}
	}
	if err != nil || line == "" {
		t.Fatalf("child %s: %v\n%s", role, err, tail(out.String(), 4000))
	}
	return line
}

// A process with a persistent session exits; messages are published to its subscription
// while it is away; a second process with the same client identifier subscribes before
// Connect, resumes the session and receives every queued message: the promise that an
// acknowledged message is never lost (issue 9, point 1).
func TestResumedSessionDeliversQueued(t *testing.T) {
	if os.Getenv(resumeRoleEnv) != "" {
		t.Skip("parent only")
	}
	const n = 1000
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	brokerLogOnFailure(t, b)
	id := fmt.Sprintf("resume-%d", time.Now().UnixNano())

	runResumeChild(t, "first", b.URL, id, n)

	ctx := faultCtx(t, 60*time.Second)
	pub, err := New(WithBroker(b.URL))
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	res := publishSeq(ctx, pub, 0, n, 8, func(seq int) PublishOptions {
		return PublishOptions{Topic: "resume/" + id + "/x", QoS: 1, Payload: []byte(strconv.Itoa(seq))}
	}, nil)
	res.check(t, "publish while the subscriber is away")
	if err := pub.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}

	line := runResumeChild(t, "second", b.URL, id, n)
	want := fmt.Sprintf("RESUME second session_present=true received=%d unrouted=0 granted=1", n)
	if line != want {
		t.Fatalf("second process reported\n  %s\nwant\n  %s", line, want)
	}
}

// queueWhileAway leaves a persistent session for id subscribed to "away/<id>/#" on b and
// publishes n QoS 1 messages to it ("0".."n-1") while nobody is connected.
func queueWhileAway(t *testing.T, b *brokertest.Mosquitto, id string, n int) {
	t.Helper()
	ctx := faultCtx(t, 30*time.Second)
	first, err := New(WithBroker(b.URL), WithClientID(id), WithCleanStart(false), WithSessionExpiry(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := first.Subscribe(ctx, []TopicFilter{{Topic: "away/" + id + "/#", QoS: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := first.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	pub, err := New(WithBroker(b.URL))
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer pub.Disconnect(ctx)
	for i := range n {
		if err := pub.Publish(ctx, PublishOptions{Topic: "away/" + id + "/x", QoS: 1, Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
}

// resumeWith connects a client for id's session with opts and returns it; it is ended (with
// its session) by the test's cleanup.
func resumeWith(t *testing.T, b *brokertest.Mosquitto, id string, opts ...Option) *Client {
	t.Helper()
	c, err := New(append([]Option{WithBroker(b.URL), WithClientID(id), WithCleanStart(false),
		WithSessionExpiry(time.Hour), WithStats()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		zero := time.Duration(0)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.DisconnectWith(ctx, DisconnectOptions{SessionExpiry: &zero})
	})
	if err := c.Connect(faultCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if !c.Info().SessionPresent {
		t.Fatal("session not resumed")
	}
	return c
}

// Messages a resumed session delivers for a subscription the program has not made go to the
// catch-all handler, in order, one at a time, and are acknowledged when it returns: nothing
// is acknowledged unseen.
func TestUnroutedHandlerGetsQueuedMessages(t *testing.T) {
	const n = 50
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	brokerLogOnFailure(t, b)
	id := fmt.Sprintf("catchall-%d", time.Now().UnixNano())
	queueWhileAway(t, b, id, n)

	got := make(chan string, n)
	var running, overlap atomic.Int32
	c := resumeWith(t, b, id, WithUnroutedHandler(func(m *Message) {
		if running.Add(1) > 1 {
			overlap.Add(1)
		}
		got <- m.Topic + " " + string(m.Payload)
		running.Add(-1)
	}))
	ctx := faultCtx(t, 30*time.Second)
	for i := range n {
		select {
		case s := <-got:
			if want := fmt.Sprintf("away/%s/x %d", id, i); s != want {
				t.Fatalf("handler got %q, want %q", s, want)
			}
		case <-ctx.Done():
			t.Fatalf("handler got %d of %d", i, n)
		}
	}
	if overlap.Load() != 0 {
		t.Error("the handler ran concurrently with itself")
	}
	// Acknowledged when the handler returned; nothing was counted as dropped.
	waitFor(t, func() bool { return c.Stats().AcksSent == n })
	if st := c.Stats(); st.Unrouted != 0 || st.Delivered != n {
		t.Fatalf("stats %+v", st)
	}
}

// Without a catch-all handler, an unrouted QoS 1 message is acknowledged, dropped, counted in
// Stats().Unrouted and logged at warn level: the first of the connection always, the rest
// rate-limited. A drop is never silent.
func TestUnroutedWarnedAndCounted(t *testing.T) {
	const n = 30
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	brokerLogOnFailure(t, b)
	id := fmt.Sprintf("unrouted-%d", time.Now().UnixNano())
	queueWhileAway(t, b, id, n)

	var buf bytes.Buffer
	var mu sync.Mutex
	h := slog.NewTextHandler(lockedWriter{&buf, &mu}, &slog.HandlerOptions{Level: slog.LevelWarn})
	c := resumeWith(t, b, id, WithLogger(slog.New(h)))
	waitFor(t, func() bool { return c.Stats().Unrouted == n })
	waitFor(t, func() bool { return c.Stats().AcksSent == n })
	mu.Lock()
	log := buf.String()
	mu.Unlock()
	if got := strings.Count(log, "acknowledged and dropped"); got != 1 {
		t.Fatalf("%d warnings about dropped messages, want exactly 1 (the first, then rate-limited):\n%s", got, log)
	}
	if !strings.Contains(log, "level=WARN") || !strings.Contains(log, "topic=away/"+id+"/x") {
		t.Fatalf("warning lacks level or topic:\n%s", log)
	}
}
