package conformance

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filequeue"
	"github.com/ternmq/tern/filestore"
	"github.com/ternmq/tern/internal/brokertest"
)

// The crash test: a child process publishes through a QueuePublisher on a filequeue, with
// its session in a filestore, and is killed with SIGKILL at random moments, then restarted
// on the same directory. Every message whose Publish returned nil must reach the subscriber.
//
// The child prints each sequence number after Publish returned nil; that line is the
// promise the parent holds it to.

const crashEnv = "TERN_CRASH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(crashEnv) != "" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}

// crashChild publishes from the sequence number in TERN_CRASH_START until killed, or, with
// TERN_CRASH_START=drain, only drains the queue and exits when it is empty.
func crashChild() int {
	dir, broker := os.Getenv("TERN_CRASH_DIR"), os.Getenv(crashEnv)
	proto := tern.MQTT5
	if os.Getenv("TERN_CRASH_PROTOCOL") == "311" {
		proto = tern.MQTT311
	}
	q, err := filequeue.Open(filepath.Join(dir, "queue"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "open queue:", err)
		return 2
	}
	st, err := filestore.Open(filepath.Join(dir, "store"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "open store:", err)
		return 2
	}
	c, err := tern.New(tern.WithBroker(broker), tern.WithClientID("crash-publisher"),
		tern.WithProtocol(proto), tern.WithCleanStart(false), tern.WithSessionExpiry(time.Hour), tern.WithStore(st),
		tern.WithReconnectBackoff(tern.ConstantBackoff(10*time.Millisecond)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx := context.Background()
	if err := c.Connect(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		return 2
	}
	p, err := tern.NewQueuePublisher(c, q)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	out := bufio.NewWriter(os.Stdout)
	start := os.Getenv("TERN_CRASH_START")
	if start == "drain" {
		for q.Stats().Depth > 0 {
			time.Sleep(20 * time.Millisecond) // a child process polling its own queue
		}
		p.Close(ctx)
		c.Disconnect(ctx)
		q.Close()
		st.Close()
		fmt.Println("drained")
		return 0
	}
	seq, _ := strconv.Atoi(start)
	for ; ; seq++ {
		qos := byte(1 + seq%2)
		if err := p.Publish(ctx, tern.PublishOptions{Topic: "crash/t", QoS: qos, Payload: binary.BigEndian.AppendUint64(nil, uint64(seq))}); err != nil {
			fmt.Fprintln(os.Stderr, "publish:", err)
			return 2
		}
		fmt.Fprintln(out, seq)
		if seq%16 == 0 {
			out.Flush() // what is not flushed was never promised
		}
	}
}

// TestCrashKill9 kills a publisher (durable queue + file store) with SIGKILL ten times
// while it publishes, at MQTT 5 and at 3.1.1, and checks that every message it promised
// arrives. [promise: a message QueuePublisher.Publish accepted survives kill -9]
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	for _, proto := range []string{"5", "311"} {
		t.Run("v"+proto, func(t *testing.T) { testCrashKill9(t, proto) })
	}
}

func testCrashKill9(t *testing.T, proto string) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// The subscriber keeps its own session so nothing is missed while it is busy.
	protocol := tern.MQTT5
	if proto == "311" {
		protocol = tern.MQTT311
	}
	sub, err := tern.New(tern.WithBroker(b.URL), tern.WithClientID("crash-subscriber"),
		tern.WithProtocol(protocol), tern.WithCleanStart(false), tern.WithSessionExpiry(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer sub.Disconnect(context.Background())
	var mu sync.Mutex
	got := make(map[uint64]int)
	if _, err := sub.SubscribeCallback(ctx, []tern.TopicFilter{{Topic: "crash/#", QoS: 2}}, func(m *tern.Message) {
		if len(m.Payload) == 8 {
			mu.Lock()
			got[binary.BigEndian.Uint64(m.Payload)]++
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	promised := make(map[uint64]bool)
	next := 0
	const kills, total = 10, 20000
	for k := 0; k < kills; k++ {
		want := total / kills
		printed := runChild(t, ctx, dir, b.URL, proto, strconv.Itoa(next), want+rand.IntN(want/2))
		for _, s := range printed {
			promised[s] = true
			if int(s) >= next {
				next = int(s) + 1
			}
		}
		t.Logf("kill %d: %d promised so far", k+1, len(promised))
	}
	if len(promised) < total {
		t.Fatalf("only %d messages promised over %d kills; the test needs %d", len(promised), kills, total)
	}
	// A last run drains what is left and exits by itself.
	cmd := childCmd(ctx, dir, b.URL, proto, "drain")
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "drained") {
		t.Fatalf("drain run: %v\n%s", err, out)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		missing := 0
		for s := range promised {
			if got[s] == 0 {
				missing++
			}
		}
		dups := 0
		for _, n := range got {
			dups += n - 1
		}
		mu.Unlock()
		if missing == 0 {
			t.Logf("%d promised, all received; %d duplicates", len(promised), dups)
			level := map[string]string{"5": "(p5,", "311": "(p2,"}[proto] // Mosquitto's names
			if n := strings.Count(b.Log(), " as crash-publisher "+level); n < kills+1 {
				t.Fatalf("Mosquitto logged %d publisher connections %s, want %d:\n%s", n, level, kills+1, b.Log())
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d promised messages never arrived", missing, len(promised))
		}
		time.Sleep(50 * time.Millisecond) // polling the subscriber's tally with a deadline
	}
}

func childCmd(ctx context.Context, dir, broker, proto, start string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+broker, "TERN_CRASH_DIR="+dir, "TERN_CRASH_START="+start, "TERN_CRASH_PROTOCOL="+proto)
	cmd.Stderr = os.Stderr
	return cmd
}

// runChild starts a publishing child, lets it promise about n messages, kills it with
// SIGKILL and returns the sequence numbers it promised.
func runChild(t *testing.T, ctx context.Context, dir, broker, proto, start string, n int) []uint64 {
	t.Helper()
	cmd := childCmd(ctx, dir, broker, proto, start)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var printed []uint64
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		v, err := strconv.ParseUint(sc.Text(), 10, 64)
		if err != nil {
			continue
		}
		printed = append(printed, v)
		if len(printed) == n {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	// Lines written before the kill were promised too: read to the end of the pipe.
	for sc.Scan() {
		if v, err := strconv.ParseUint(sc.Text(), 10, 64); err == nil {
			printed = append(printed, v)
		}
	}
	cmd.Wait()
	if len(printed) == 0 {
		t.Fatal("child promised nothing; see its stderr above")
	}
	return printed
}
