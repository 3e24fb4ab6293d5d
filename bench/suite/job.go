// Package suite runs the side-by-side benchmarks of tern against Eclipse Paho through
// Mosquitto: the scenarios, the child processes that run one library each, the neutral load
// (package rawmqtt) and the report.
//
// Every measurement runs the library under test in a child process of its own (the suite's
// binary started again with -child), so the child's CPU time, read with getrusage, is the
// library's alone: the broker, the sink that checks the messages and the feeder that loads
// the broker live in other processes. The parent talks to a child over its standard input
// (lines "go", "fed", "stop") and output (one JSON event per line).
package suite

import (
	"time"

	"github.com/ternmq/tern/bench/adapters"
	"github.com/ternmq/tern/bench/stamp"
)

// Kinds of job.
const (
	KindPublish   = "pub"       // one goroutine, synchronous Publish
	KindConc      = "conc"      // Workers goroutines, synchronous Publish
	KindPipe      = "pipe"      // one goroutine, asynchronous publish (or goroutines)
	KindReceive   = "recv"      // the library subscribes, the raw feeder publishes
	KindSlow      = "slow"      // as recv, with a consumer that lags
	KindLatency   = "latency"   // publish→deliver round trips, both ends in the child
	KindReconnect = "reconnect" // 20 QoS 1 in flight when the connection is cut
	KindQueue     = "queue"     // enqueue a backlog into a durable queue, drain it
	KindDrain     = "drain"     // the broker holds a backlog for a kept session; the library drains it
	KindSink      = "sink"      // the receiving side of a publish job in a process of its own (SinkProc)
)

// Job is what one child process does: one library, one scenario, one run.
type Job struct {
	Kind     string        `json:"kind"`
	Lib      string        `json:"lib"` // adapters.New name
	QoS      byte          `json:"qos"`
	Size     int           `json:"size"`
	N        int           `json:"n"`
	Workers  int           `json:"workers,omitempty"`
	Mode     adapters.Mode `json:"mode,omitempty"`
	ZeroCopy bool          `json:"zero_copy,omitempty"`
	Inline   bool          `json:"inline,omitempty"` // tern: SubInline callbacks
	Queue    string        `json:"queue,omitempty"`  // memory or file
	QueueDir string        `json:"queue_dir,omitempty"`
	Store    string        `json:"store,omitempty"` // tern's session store: memory or file
	StoreDir string        `json:"store_dir,omitempty"`
	Addr     string        `json:"addr"`
	Topic    string        `json:"topic"`
	ClientID string        `json:"client_id"`
	Run      uint32        `json:"run"` // stamped into every payload
	Profile  string        `json:"profile,omitempty"`
	Heap     bool          `json:"heap,omitempty"` // sample the heap for its peak
	Pool     int           `json:"pool,omitempty"` // tern's publisher pool size
	V311     bool          `json:"v311,omitempty"` // tern on MQTT 3.1.1
	WS       bool          `json:"ws,omitempty"`   // tern over WebSocket; Addr is the WebSocket listener
	// OneAtATime: raw publishes one message at a time in a synchronous publish scenario.
	OneAtATime bool `json:"one_at_a_time,omitempty"`
}

// Event is one line a child writes to its standard output.
type Event struct {
	Event  string       `json:"event"` // ready, started, sent, result
	T      int64        `json:"t"`     // Unix nanoseconds when it happened
	Result *ChildResult `json:"result,omitempty"`
}

// ChildResult is what a child measured between "go" and "stop".
type ChildResult struct {
	Start    int64  `json:"start"`     // Unix ns: the workload began
	Sent     int64  `json:"sent"`      // Unix ns: the workload returned
	LastRecv int64  `json:"last_recv"` // Unix ns: the last new message (receiving jobs)
	UserNs   int64  `json:"user_ns"`   // CPU time of the process, user and system
	SysNs    int64  `json:"sys_ns"`
	Mallocs  uint64 `json:"mallocs"` // heap allocations (runtime.MemStats deltas)
	Bytes    uint64 `json:"bytes"`
	GCs      uint32 `json:"gcs"`
	// System calls and context switches of the whole process (see procIO); the reads
	// include the child's few reads of its parent's commands.
	ReadCalls   int64 `json:"read_calls"`
	WriteCalls  int64 `json:"write_calls"`
	CtxSwitches int64 `json:"ctx_switches"`
	// BrokerNs is Mosquitto's CPU time over the same span, filled by the parent (proc.finish).
	BrokerNs int64         `json:"broker_ns,omitempty"`
	PeakHeap uint64        `json:"peak_heap,omitempty"` // above the heap at "go"
	Counts   *stamp.Counts `json:"counts,omitempty"`    // receiving jobs
	P50      int64         `json:"p50_ns,omitempty"`    // latency jobs
	P99      int64         `json:"p99_ns,omitempty"`
	Max      int64         `json:"max_ns,omitempty"`
	Err      string        `json:"err,omitempty"`
	// Unavailable: the library lacks what the job needs (Err says what); skip, not fail.
	Unavailable bool `json:"unavailable,omitempty"`
	// MaxUnacked: a sink job's most QoS 1/2 messages owed an acknowledgement at once.
	MaxUnacked int `json:"max_unacked,omitempty"`
	// AckWrites: a sink job's writes of acknowledgements (rawmqtt.Client.AckWrites).
	AckWrites int64 `json:"ack_writes,omitempty"`
}

// idleLimit is how long a receiver waits for the next message once the sender is done
// before it declares the rest missing.
const idleLimit = 3 * time.Second

// brokerWindow is the Receive Maximum Mosquitto grants (max_inflight_messages) and the one
// every MQTT 5 client advertises.
const brokerWindow = 20
