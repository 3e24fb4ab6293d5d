package suite

import (
	"fmt"

	"github.com/ternmq/tern/bench/adapters"
)

// Scenario is one comparison: the same workload for several libraries.
type Scenario struct {
	Name    string
	Kind    string
	QoS     byte
	Size    int
	N       int // messages in a full run
	QuickN  int // messages with -quick
	Workers int
	Mode    adapters.Mode
	Libs    []Lib
	Note    string // what the raw row does here, and other caveats
	// Broker is where the scenario runs: "" is the suite's Mosquitto, brokerMochi the
	// embedded mochi with a TCP and a WebSocket listener (started on first use).
	Broker string
}

// Lib is one row of a scenario: a library and how it is set up.
type Lib struct {
	Name     string // as shown in the tables
	Adapter  string // adapters.New name
	ZeroCopy bool
	Inline   bool   // tern: the callback runs on the read loop (SubInline)
	Queue    string // memory or file
	Store    string // tern's session store: "" (none), memory or file
	N        int    // overrides the scenario's N (a slow queue gets a smaller backlog)
	QuickN   int
	Pool     int  // tern's publisher pool size (WithPublisherPool); 0: none
	V311     bool // tern on MQTT 3.1.1
	WS       bool // tern over WebSocket (the broker's WebSocket listener)
	// OneAtATime: raw publishes one message and waits for its acknowledgement, like the
	// libraries' synchronous Publish (raw otherwise pipelines).
	OneAtATime bool
}

// Row names. The ratio columns compare "tern" with the other three.
const (
	rowTern     = "tern"
	rowAutopaho = "autopaho"
	rowPaho3    = "paho3"
	rowRaw      = "raw"
	// rowRawSync is raw publishing one message at a time: the floor of a synchronous publish.
	rowRawSync = "raw-sync"
	// rowTernV3 is tern on MQTT 3.1.1, compared with paho3 on the protocol paho3 speaks.
	rowTernV3 = "tern-v3"

	// The publisher pool scenario compares tern with a pool of 4 against tern alone.
	poolScenario = "pool4-pipe-q1-64B"
	rowTernPool  = "tern-pool4"

	// The receive QoS 2 scenario compares tern's two session stores.
	rowTernMemStore  = "tern-memstore"
	rowTernFileStore = "tern-filestore"
	// Callback rows with SubInline: zero-copy, and copying.
	rowTernInline     = "tern-inline"
	rowTernInlineCopy = "tern-inline-copy"

	// The transport scenarios compare tern over TCP and over WebSocket on one mochi broker.
	rowTernTCP = "tern-tcp"
	rowTernWS  = "tern-ws"
)

// brokerMochi is Scenario.Broker for the embedded mochi broker.
const brokerMochi = "mochi"

var (
	libTern     = Lib{Name: rowTern, Adapter: "tern"}
	libTernZC   = Lib{Name: rowTern, Adapter: "tern", ZeroCopy: true}
	libTernCopy = Lib{Name: "tern-copy", Adapter: "tern"}
	libTernInl  = Lib{Name: rowTernInline, Adapter: "tern", ZeroCopy: true, Inline: true}
	libTernInlC = Lib{Name: rowTernInlineCopy, Adapter: "tern", Inline: true}
	libAutopaho = Lib{Name: rowAutopaho, Adapter: "autopaho"}
	libPaho3    = Lib{Name: rowPaho3, Adapter: "paho3"}
	libRaw      = Lib{Name: rowRaw, Adapter: "raw"}
	libRawSync  = Lib{Name: rowRawSync, Adapter: "raw", OneAtATime: true}
	libTernV3   = Lib{Name: rowTernV3, Adapter: "tern", V311: true}
	libTernV3ZC = Lib{Name: rowTernV3, Adapter: "tern", V311: true, ZeroCopy: true}
)

var sizes = []struct {
	name  string
	bytes int
}{{"64B", 64}, {"1KiB", 1024}, {"64KiB", 64 << 10}}

// Scenarios returns every scenario of the suite, in the order they run and are reported.
func Scenarios() []Scenario {
	var s []Scenario
	// Messages per synchronous publish scenario, by QoS and size: each run takes a few
	// seconds for the slowest library.
	pubN := map[byte][3][2]int{
		0: {{400000, 2000}, {250000, 1000}, {20000, 200}},
		1: {{40000, 500}, {30000, 500}, {10000, 100}},
		2: {{30000, 300}, {25000, 300}, {8000, 100}},
	}
	for _, qos := range []byte{0, 1, 2} {
		for i, sz := range sizes {
			n := pubN[qos][i]
			libs := []Lib{libTern, libAutopaho, libPaho3, libRaw}
			if qos < 2 {
				libs = []Lib{libTern, libTernV3, libAutopaho, libPaho3, libRaw}
			}
			if qos > 0 {
				libs = append(libs, libRawSync)
			}
			s = append(s, Scenario{
				Name: fmt.Sprintf("pub-q%d-%s", qos, sz.name), Kind: KindPublish, QoS: qos, Size: sz.bytes,
				N: n[0], QuickN: n[1], Libs: libs,
				Note: "one goroutine, synchronous publish; raw pipelines (the ceiling), raw-sync waits for each acknowledgement (the floor of one at a time)",
			})
		}
	}
	for _, w := range []int{8, 64} {
		s = append(s, Scenario{
			Name: fmt.Sprintf("conc%d-q1-64B", w), Kind: KindConc, QoS: 1, Size: 64, Workers: w,
			N: 100000, QuickN: 1000, Libs: []Lib{libTern, libAutopaho, libPaho3, libRaw},
			Note: fmt.Sprintf("%d goroutines, synchronous publish; raw pipelines", w),
		})
	}
	s = append(s, Scenario{
		Name: "pipe-q1-64B", Kind: KindPipe, QoS: 1, Size: 64, N: 100000, QuickN: 1000,
		Libs: []Lib{libTern, libTernV3, libAutopaho, libPaho3, libRaw},
		Note: "one goroutine: tern PublishAsync, paho3 tokens (20 outstanding); autopaho has no async form: 20 goroutines",
	})
	s = append(s, Scenario{
		Name: poolScenario, Kind: KindPipe, QoS: 1, Size: 64, N: 100000, QuickN: 1000,
		Libs: []Lib{libTern, {Name: rowTernPool, Adapter: "tern", Pool: 4}},
		Note: "one goroutine, PublishAsync; tern-pool4 adds WithPublisherPool(4): five windows of 20 instead of one",
	})
	for _, qos := range []byte{0, 1} {
		n, qn := 300000, 2000
		if qos == 1 {
			n, qn = 100000, 1000
		}
		for _, mode := range []adapters.Mode{adapters.Callback, adapters.Channel} {
			libs := []Lib{libTernZC, libTernCopy, libTernInl, libTernInlC, libTernV3ZC, libAutopaho, libPaho3, libRaw}
			if mode == adapters.Channel {
				libs = []Lib{libTernZC, libTernCopy, libTernV3ZC, libAutopaho, libPaho3, libRaw}
			}
			s = append(s, Scenario{
				Name: fmt.Sprintf("recv-q%d-%s-64B", qos, mode), Kind: KindReceive, QoS: qos, Size: 64,
				N: n, QuickN: qn, Mode: mode, Libs: libs,
				Note: "raw feeder publishes; tern receives zero-copy (tern-copy: copies; -inline: SubInline); raw handles on its read loop",
			})
		}
	}
	s = append(s, Scenario{
		Name: "recv-q2-callback-64B", Kind: KindReceive, QoS: 2, Size: 64, N: 100000, QuickN: 1000,
		Mode: adapters.Callback,
		Libs: []Lib{
			{Name: rowTernMemStore, Adapter: "tern", ZeroCopy: true, Store: "memory"},
			{Name: rowTernFileStore, Adapter: "tern", ZeroCopy: true, Store: "file"},
			libRaw,
		},
		Note: "raw feeder publishes QoS 2; tern receives zero-copy with a session store (memory, or filestore syncing every write); raw handles on its read loop",
	})
	s = append(s, Scenario{
		Name: "conc16-q2-store-64B", Kind: KindConc, QoS: 2, Size: 64, Workers: 16, N: 20000, QuickN: 300,
		Libs: []Lib{
			{Name: rowTernMemStore, Adapter: "tern", Store: "memory"},
			{Name: rowTernFileStore, Adapter: "tern", Store: "file"},
		},
		Note: "16 goroutines publish QoS 2 synchronously with a session store (memory, or filestore syncing every write): each message's record before it is sent, its RecordReleased before PUBREL",
	})
	for _, qos := range []byte{0, 1} {
		s = append(s, Scenario{
			Name: fmt.Sprintf("drain-q%d-64B", qos), Kind: KindDrain, QoS: qos, Size: 64,
			N: 200000, QuickN: 2000, Mode: adapters.Callback,
			Libs: []Lib{libTernZC, libTernInl, libTernInlC, libAutopaho},
			Note: "backlog drain: the broker holds the messages for a kept session; the library resumes it and takes them all; msg/s from the start of the connect to the last message",
		})
	}
	for _, qos := range []byte{0, 1} {
		s = append(s, Scenario{
			Name: fmt.Sprintf("latency-q%d-64B", qos), Kind: KindLatency, QoS: qos, Size: 64,
			N: 20000, QuickN: 200, Libs: []Lib{libTern, libAutopaho, libPaho3, libRaw},
			Note: "publish→deliver round trip, one at a time, both ends in the child; msg/s = round trips per second",
		})
	}
	s = append(s, transportScenarios()...)
	s = append(s, Scenario{
		Name: "reconnect-q1-64B", Kind: KindReconnect, QoS: 1, Size: 64, N: 20, QuickN: 20,
		Libs: []Lib{libTern, libAutopaho, libPaho3},
		Note: "20 QoS 1 in flight (held by a proxy) when the connection is cut; time from the cut until all 20 are delivered",
	})
	s = append(s, Scenario{
		Name: "slow-q0-1KiB", Kind: KindSlow, QoS: 0, Size: 1024, N: 30000, QuickN: 2000, Mode: adapters.Callback,
		Libs: []Lib{libTern, libAutopaho, libPaho3},
		Note: "consumer sleeps 1 ms every 10 messages while the raw feeder runs at full speed; peak heap above the start",
	})
	s = append(s, Scenario{
		Name: "queue-q1-64B", Kind: KindQueue, QoS: 1, Size: 64, N: 100000, QuickN: 1000, Workers: 16,
		Libs: []Lib{
			{Name: "tern-memq", Adapter: "tern", Queue: "memory"},
			{Name: "tern-fileq", Adapter: "tern", Queue: "file"},
			{Name: "tern-fileq-async", Adapter: "tern", Queue: "file-async"},
			{Name: "autopaho-memq", Adapter: "autopaho", Queue: "memory", N: 50000, QuickN: 500},
			{Name: "autopaho-fileq", Adapter: "autopaho", Queue: "file", N: 2000, QuickN: 50},
		},
		Note: "16 goroutines enqueue a backlog as fast as they can while the queue drains through Mosquitto (tern-fileq-async: with PublishAsync, returning before the sync); msg/s from the first enqueue to the last delivery",
	})
	s = append(s, Scenario{
		Name: "backlog10k-q1-64B", Kind: KindQueue, QoS: 1, Size: 64, N: 10000, QuickN: 100, Workers: 16,
		Libs: []Lib{
			{Name: "tern-fileq", Adapter: "tern", Queue: "file"},
			{Name: "autopaho-fileq", Adapter: "autopaho", Queue: "file"},
		},
		Note: "the file queues with the same 10,000-message backlog: enqueue and drain through Mosquitto, msg/s from the first enqueue to the last delivery",
	})
	s = append(s, Scenario{
		Name: "backlog1M-q1-64B", Kind: KindQueue, QoS: 1, Size: 64, N: 1000000, QuickN: 1000, Workers: 16,
		Libs: []Lib{{Name: "tern-fileq", Adapter: "tern", Queue: "file"}},
		Note: "tern's file queue with a 1,000,000-message backlog: peak heap stays flat while it drains",
	})
	return s
}

// transportScenarios measure what WebSocket costs beside TCP: tern over each, through the
// same mochi broker (Mosquitto 2.0.11 will not start a WebSocket listener here). The
// workloads avoid a mochi v2.7.9 deadlock (Inflight.NextImmediate takes its read lock
// twice, so a QoS 1/2 message routed to a client while that client's acknowledgements are
// processed can lock both): QoS 1 is only published, to a sink that subscribes at QoS 0,
// and receiving is QoS 0, so no client ever has QoS 1/2 messages routed to it.
func transportScenarios() []Scenario {
	libs := []Lib{{Name: rowTernTCP, Adapter: "tern"}, {Name: rowTernWS, Adapter: "tern", WS: true}}
	zc := []Lib{{Name: rowTernTCP, Adapter: "tern", ZeroCopy: true}, {Name: rowTernWS, Adapter: "tern", ZeroCopy: true, WS: true}}
	return []Scenario{
		{
			Name: "ws-pub-q1-64B", Kind: KindPublish, QoS: 1, Size: 64, N: 20000, QuickN: 200,
			Libs: libs, Broker: brokerMochi,
			Note: "mochi: one goroutine, synchronous QoS 1 publish over TCP or WebSocket; the sink takes them at QoS 0",
		},
		{
			Name: "ws-pipe-q1-64B", Kind: KindPipe, QoS: 1, Size: 64, N: 100000, QuickN: 500,
			Libs: libs, Broker: brokerMochi,
			Note: "mochi: one goroutine, PublishAsync over TCP or WebSocket (window 20); the sink takes them at QoS 0",
		},
		{
			Name: "ws-recv-q0-64B", Kind: KindReceive, QoS: 0, Size: 64, N: 200000, QuickN: 1000,
			Mode: adapters.Callback, Libs: zc, Broker: brokerMochi,
			Note: "mochi: the raw feeder publishes QoS 0 over TCP; tern receives zero-copy over TCP or WebSocket",
		},
	}
}

// count returns how many messages lib sends in sc.
func (sc *Scenario) count(lib Lib, quick bool) int {
	switch {
	case quick && lib.QuickN > 0:
		return lib.QuickN
	case quick:
		return sc.QuickN
	case lib.N > 0:
		return lib.N
	}
	return sc.N
}
