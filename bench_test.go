package tern

import (
	"bufio"
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// benchServer is a minimal MQTT server for client benchmarks: it answers CONNECT, then either
// discards everything (sink), acknowledges QoS 1 publishes, or writes n pre-encoded packets.
// It allocates nothing per message, so the benchmark's allocations are the client's.
type benchServer struct {
	ln   net.Listener
	done chan struct{}
}

func startBenchServer(b testing.TB, serve func(nc net.Conn, r *packet.Reader)) *benchServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &benchServer{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		r := packet.NewReader(nc, 64<<10)
		f, err := r.ReadFrame()
		if err != nil {
			return
		}
		f.Release()
		nc.Write((&packet.Connack{ReceiveMaximum: 65535}).AppendTo(nil))
		serve(nc, r)
	}()
	b.Cleanup(func() {
		ln.Close()
		<-s.done
	})
	return s
}

func benchClient(b testing.TB, addr string, opts ...Option) *Client {
	c, err := New(append([]Option{WithBroker("mqtt://" + addr), WithoutKeepAlive()}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Connect(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	return c
}

// BenchmarkPublishQoS0 measures the client's cost of a fire-and-forget publish.
func BenchmarkPublishQoS0(b *testing.B) {
	s := startBenchServer(b, func(nc net.Conn, _ *packet.Reader) { io.Copy(io.Discard, nc) })
	c := benchClient(b, s.ln.Addr().String())
	ctx := context.Background()
	m := PublishOptions{Topic: "bench/qos0", Payload: make([]byte, 64)}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Publish(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPublishQoS1Async measures one goroutine keeping the window busy with PublishAsync.
func BenchmarkPublishQoS1Async(b *testing.B) {
	s := startBenchServer(b, func(nc net.Conn, r *packet.Reader) {
		w := bufio.NewWriterSize(nc, 64<<10)
		var pub packet.Publish
		for {
			f, err := r.ReadFrame()
			if err != nil {
				return
			}
			if f.Type() == packet.PUBLISH && pub.Decode(f.Flags(), f.Body) == nil && pub.QoS == 1 {
				a := packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID}
				var buf [4]byte
				w.Write(a.AppendTo(buf[:0]))
			}
			f.Release()
			if r.Buffered() == 0 {
				w.Flush()
			}
		}
	})
	c := benchClient(b, s.ln.Addr().String())
	ctx := context.Background()
	m := PublishOptions{Topic: "bench/qos1", Payload: make([]byte, 64), QoS: 1}
	toks := make(chan *PublishToken, 4096)
	errc := make(chan error, 1)
	go func() {
		for t := range toks {
			if err := t.Wait(ctx); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	b.ReportAllocs()
	for b.Loop() {
		t, err := c.PublishAsync(ctx, m)
		if err != nil {
			b.Fatal(err)
		}
		toks <- t
	}
	close(toks)
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkReceiveQoS0ZeroCopy measures receiving on the zero-copy path: the server writes
// b.N QoS 0 messages, the application takes each from the channel and acknowledges it.
func BenchmarkReceiveQoS0ZeroCopy(b *testing.B) {
	benchReceive(b, SubZeroCopy())
}

// BenchmarkReceiveQoS0Copy is the same with the default, copying delivery.
func BenchmarkReceiveQoS0Copy(b *testing.B) {
	benchReceive(b)
}

// BenchmarkReceiveQoS1ZeroCopy is the zero-copy path at QoS 1: every message is
// acknowledged, in batches per read (the acknowledgements must not allocate either).
func BenchmarkReceiveQoS1ZeroCopy(b *testing.B) {
	benchReceiveQoS(b, 1, SubZeroCopy())
}

// BenchmarkReceiveQoS1Callback is BenchmarkReceiveQoS1ZeroCopy with a callback goroutine
// (SubscribeCallback, acknowledged when the callback returns) instead of a channel.
func BenchmarkReceiveQoS1Callback(b *testing.B) {
	var n atomic.Int64
	var want atomic.Int64
	done := make(chan struct{}, 1)
	benchReceiveWith(b, 1, func(c *Client) {
		_, err := c.SubscribeCallback(context.Background(), []TopicFilter{{Topic: "bench/#", QoS: 1}},
			func(*Message) {
				if n.Add(1) == want.Load() {
					done <- struct{}{}
				}
			}, SubZeroCopy(), SubBuffer(4096))
		if err != nil {
			b.Fatal(err)
		}
	}, func(N int) func() {
		n.Store(0)
		want.Store(int64(N))
		return func() { <-done }
	})
}

func benchReceive(b *testing.B, opts ...SubOption) { benchReceiveQoS(b, 0, opts...) }

func benchReceiveQoS(b *testing.B, qos byte, opts ...SubOption) {
	var ch <-chan *Message
	benchReceiveWith(b, qos, func(c *Client) {
		var err error
		ch, _, err = c.Subscribe(context.Background(), []TopicFilter{{Topic: "bench/#", QoS: qos}}, append(opts, SubBuffer(4096))...)
		if err != nil {
			b.Fatal(err)
		}
	}, func(n int) func() {
		return func() {
			for range n {
				m := <-ch
				m.Ack()
			}
		}
	})
}

// benchReceiveWith runs a receive benchmark: sub subscribes to bench/# on the client, then
// prepare(b.N) is called before the server sends b.N messages, and the wait it returns
// must return once they have all been taken.
func benchReceiveWith(b *testing.B, qos byte, sub func(c *Client), prepare func(n int) (wait func())) {
	start := make(chan int)
	s := startBenchServer(b, func(nc net.Conn, r *packet.Reader) {
		f, err := r.ReadFrame() // SUBSCRIBE
		if err != nil {
			return
		}
		var sp packet.Subscribe
		sp.Decode(f.Flags(), f.Body)
		f.Release()
		nc.Write((&packet.Suback{PacketID: sp.PacketID, ReasonCodes: []packet.ReasonCode{0}}).AppendTo(nil))
		pub := packet.Publish{Topic: "bench/rx", Payload: make([]byte, 64), SubscriptionIDs: []uint32{sp.SubscriptionID}, QoS: qos}
		if sp.SubscriptionID == 0 {
			pub.SubscriptionIDs = nil
		}
		const batch = 256
		var block []byte
		var one []byte
		for i := range batch {
			pub.PacketID = uint16(i + 1) // reused block after block: QoS 1 receipts are not kept by id
			one = pub.AppendTo(one[:0])
			block = append(block, one...)
		}
		go io.Copy(io.Discard, nc)
		for n := range start {
			for n >= batch {
				nc.Write(block)
				n -= batch
			}
			nc.Write(block[:n*len(one)])
		}
	})
	sub(benchClient(b, s.ln.Addr().String()))
	b.ReportAllocs()
	b.ResetTimer()
	wait := prepare(b.N)
	start <- b.N
	wait()
	b.StopTimer()
	close(start)
}
