package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packet"
)

// collector keeps what one subscription received, in arrival order. Expect steps consume
// from next on. Safe for concurrent use.
type collector struct {
	name string
	ev   *eventLog
	sc   *scenario
	sub  *tern.Subscription

	mu      sync.Mutex
	msgs    []got
	next    int           // first message no expect step has looked at
	changed chan struct{} // closed and replaced on each message
}

// maxCollected bounds what one subscription keeps: a flood beyond it is counted, not kept.
const maxCollected = 1 << 20

func newCollector(name string, ev *eventLog, sc *scenario) *collector {
	return &collector{name: name, ev: ev, sc: sc, changed: make(chan struct{})}
}

// add is the subscription callback: it copies the message (it owns its memory already,
// but the properties are converted) and wakes waiters.
// receive acknowledges m and collects it. The acknowledgement is issued before the message
// counts, so a step that ends (and disconnects) as soon as it has seen its messages never
// leaves one unacknowledged for the broker to deliver again to the next step.
func (c *collector) receive(m *tern.Message) {
	m.Ack() // the callback's own acknowledgement after it returns is then a no-op
	c.add(m)
}

func (c *collector) add(m *tern.Message) {
	g := got{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, ContentType: m.ContentType,
		ResponseTopic: m.ResponseTopic, CorrelationData: m.CorrelationData}
	for _, p := range m.UserProperties {
		g.UserProperties = append(g.UserProperties, kv{p.Key, p.Value})
	}
	c.ev.message(c.sc, c.name, g)
	c.mu.Lock()
	if len(c.msgs) < maxCollected {
		c.msgs = append(c.msgs, g)
	}
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// waitFor waits until at least n unconsumed messages are there or the deadline passes; it
// returns the number there.
func (c *collector) waitFor(ctx context.Context, n int, deadline time.Time) int {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		c.mu.Lock()
		have, ch := len(c.msgs)-c.next, c.changed
		c.mu.Unlock()
		if n >= 0 && have >= n {
			return have
		}
		select {
		case <-ch:
		case <-t.C:
			return have
		case <-ctx.Done():
			return have
		}
	}
}

// take returns the unconsumed messages and marks them consumed.
func (c *collector) take() []got {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := append([]got(nil), c.msgs[c.next:]...)
	c.next = len(c.msgs)
	return out
}

// message builds the message to publish from m, with def (the step's inline fields) as
// defaults, for sequence number seq.
func (r *runner) message(m, def *msgSpec, seq int) (tern.PublishOptions, error) {
	vars := r.sc.vars
	pick := func(a, b string) string {
		if a == "" && def != nil {
			a = b
		}
		return expand(a, vars, seq)
	}
	var o tern.PublishOptions
	o.Topic = pick(m.Topic, defField(def, func(d *msgSpec) string { return d.Topic }))
	src := m
	if m.Payload == nil && m.File == nil && m.Base64 == nil && m.JSON == nil && m.Msgpack == nil && def != nil {
		src = def
	}
	var err error
	if o.Payload, err = r.payload(src, seq); err != nil {
		return o, err
	}
	switch {
	case m.QoS != nil:
		o.QoS = byte(*m.QoS)
	case def != nil && def.QoS != nil:
		o.QoS = byte(*def.QoS)
	}
	switch {
	case m.Retain != nil:
		o.Retain = *m.Retain
	case def != nil && def.Retain != nil:
		o.Retain = *def.Retain
	}
	o.ContentType = pick(m.ContentType, defField(def, func(d *msgSpec) string { return d.ContentType }))
	o.ResponseTopic = pick(m.ResponseTopic, defField(def, func(d *msgSpec) string { return d.ResponseTopic }))
	if cd := pick(m.CorrelationData, defField(def, func(d *msgSpec) string { return d.CorrelationData })); cd != "" {
		o.CorrelationData = []byte(cd)
	}
	o.PayloadFormat = byte(m.PayloadFormat)
	o.MessageExpiry = m.MessageExpiry.d
	if def != nil {
		if o.PayloadFormat == 0 {
			o.PayloadFormat = byte(def.PayloadFormat)
		}
		if o.MessageExpiry == 0 {
			o.MessageExpiry = def.MessageExpiry.d
		}
	}
	props := m.UserProperties.kv
	if len(props) == 0 && def != nil {
		props = def.UserProperties.kv
	}
	for _, p := range props {
		o.UserProperties = append(o.UserProperties, packet.UserProperty{Key: p.k, Value: expand(p.v, vars, seq)})
	}
	return o, nil
}

func defField(def *msgSpec, f func(*msgSpec) string) string {
	if def == nil {
		return ""
	}
	return f(def)
}

// payload returns a message's payload from its one source.
func (r *runner) payload(m *msgSpec, seq int) ([]byte, error) {
	switch {
	case m.Payload != nil:
		return []byte(expand(*m.Payload, r.sc.vars, seq)), nil
	case m.File != nil:
		b, err := os.ReadFile(r.sc.path(expand(m.File.s, r.sc.vars, seq)))
		if err != nil {
			return nil, failf("payload file: %v", err)
		}
		return b, nil
	case m.Base64 != nil:
		return base64.StdEncoding.DecodeString(*m.Base64) // validated at load
	case m.JSON != nil:
		b, err := json.Marshal(expandValue(m.JSON.v, r.sc.vars, seq))
		if err != nil {
			return nil, failf("json payload: %v", err)
		}
		return b, nil
	case m.Msgpack != nil:
		b, err := msgpack.Marshal(expandValue(m.Msgpack.v, r.sc.vars, seq))
		if err != nil {
			return nil, failf("msgpack payload: %v", err)
		}
		return b, nil
	}
	return nil, nil
}

// expandValue expands the templates in every string of a decoded YAML value.
func expandValue(v any, vars map[string]string, seq int) any {
	switch x := v.(type) {
	case string:
		return expand(x, vars, seq)
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = expandValue(e, vars, seq)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = expandValue(e, vars, seq)
		}
		return s
	}
	return v
}

func (r *runner) publish(ctx context.Context, p *publishSpec) error {
	lc := r.live(p.Client.s)
	if !lc.connected {
		return failf("publish %s: not connected (add a connect step before)", lc.name)
	}
	var msgs []*msgSpec
	var def *msgSpec
	n := 1
	switch {
	case len(p.Messages) > 0:
		msgs, def = p.Messages, p.defaults()
	case p.Repeat > 0:
		msgs, n = []*msgSpec{p.defaults()}, p.Repeat
	default:
		msgs = []*msgSpec{p.defaults()}
	}
	seq := 0
	for range n {
		for _, m := range msgs {
			seq++
			if seq > 1 && p.Interval.d > 0 {
				if err := sleepCtx(ctx, p.Interval.d); err != nil {
					return failf("publish %s: message %d: %v", lc.name, seq, err)
				}
			}
			o, err := r.message(m, def, seq)
			if err != nil {
				return failf("publish %s: message %d: %v", lc.name, seq, err)
			}
			if err := lc.c.Publish(ctx, o); err != nil {
				return failf("publish %s: message %d to %s: %v", lc.name, seq, o.Topic, err)
			}
		}
	}
	return nil
}

// expect waits for what a subscription should receive and checks it.
func (r *runner) expect(ctx context.Context, e *expectSpec) error {
	r.mu.Lock()
	col := r.subs[e.On.s]
	r.mu.Unlock()
	if col == nil {
		return failf("expect on %s: the subscription was never made (its step did not run)", e.On.s)
	}
	if e.None != nil {
		sleepCtx(ctx, e.None.d)
		if msgs := col.take(); len(msgs) > 0 {
			return failf("expect on %s: wanted no messages for %v, got %d (%s)", e.On.s, e.None.d, len(msgs), listMsgs(msgs))
		}
		return ctx.Err()
	}
	within := defaultWithin
	if e.Within.set {
		within = e.Within.d
	}
	target := -1 // -1: watch the whole window (only a maximum, or count: 0, is given)
	switch {
	case e.Count != nil && *e.Count == 0:
		// Zero is reached before anything arrives: like max: 0, watch the whole window.
	case e.Count != nil:
		target = *e.Count
	case e.Min != nil:
		target = *e.Min
	case e.Max == nil:
		target = max(len(e.Messages), 1)
	}
	if target >= 0 && target < len(e.Messages) {
		target = len(e.Messages)
	}
	have := col.waitFor(ctx, target, time.Now().Add(within))
	if target >= 0 && have >= target && e.Settle.d > 0 {
		col.waitFor(ctx, -1, time.Now().Add(e.Settle.d))
	}
	msgs := col.take()
	if err := ctx.Err(); err != nil {
		return err
	}
	return checkExpect(e, r.sc, within, msgs)
}

// checkExpect compares what came with what the step wants; nil when it matches.
func checkExpect(e *expectSpec, sc *scenario, within time.Duration, msgs []got) error {
	on := e.On.s
	n := len(msgs)
	plural := func(k int) string {
		if k == 1 {
			return "1 message"
		}
		return fmt.Sprintf("%d messages", k)
	}
	switch {
	case e.Count != nil && n < *e.Count:
		return failf("expect on %s: wanted %s within %v, got %d%s", on, plural(*e.Count), within, n, listSuffix(msgs))
	case e.Count != nil && n > *e.Count:
		return failf("expect on %s: wanted %s, got %d: %d extra (%s)", on, plural(*e.Count), n, n-*e.Count, listMsgs(msgs[*e.Count:]))
	case e.Min != nil && n < *e.Min:
		return failf("expect on %s: wanted at least %s within %v, got %d%s", on, plural(*e.Min), within, n, listSuffix(msgs))
	case e.Max != nil && n > *e.Max:
		return failf("expect on %s: wanted at most %s, got %d: %d extra (%s)", on, plural(*e.Max), n, n-*e.Max, listMsgs(msgs[*e.Max:]))
	case e.Count == nil && e.Min == nil && e.Max == nil && n < max(len(e.Messages), 1), n < len(e.Messages):
		return failf("expect on %s: wanted %s within %v, got %d%s", on, plural(max(len(e.Messages), 1)), within, n, listSuffix(msgs))
	}
	if e.All != nil {
		cm := compileMatcher(e.All, sc)
		for i, g := range msgs {
			if why := cm.mismatch(g); why != "" {
				return failf("expect on %s: message %d (%s): %s", on, i+1, g, why)
			}
		}
	}
	if e.Ordered {
		for i, m := range e.Messages {
			if why := compileMatcher(m, sc).mismatch(msgs[i]); why != "" {
				return failf("expect on %s: message %d (%s): %s", on, i+1, msgs[i], why)
			}
		}
	} else if err := matchAnyOrder(on, e.Messages, sc, msgs); err != nil {
		return err
	}
	if e.NoDuplicates {
		seen := map[string]int{}
		for i, g := range msgs {
			k := g.Topic + "\x00" + string(g.Payload)
			if j, ok := seen[k]; ok {
				return failf("expect on %s: message %d (%s) duplicates message %d", on, i+1, g, j+1)
			}
			seen[k] = i
		}
	}
	return nil
}

// matchAnyOrder finds, for each matcher in turn, the first unused message it accepts.
func matchAnyOrder(on string, ms []*matcher, sc *scenario, msgs []got) error {
	used := make([]bool, len(msgs))
	for i, m := range ms {
		cm := compileMatcher(m, sc)
		found, closest := false, ""
		for j, g := range msgs {
			if used[j] {
				continue
			}
			why := cm.mismatch(g)
			if why == "" {
				used[j], found = true, true
				break
			}
			if closest == "" {
				closest = fmt.Sprintf("; first other: %s: %s", g, why)
			}
		}
		if !found {
			return failf("expect on %s: no message matches messages[%d] (line %d)%s", on, i, m.at.line, closest)
		}
	}
	return nil
}

// listMsgs shows up to five messages; more are counted.
func listMsgs(msgs []got) string {
	var b strings.Builder
	for i, g := range msgs {
		if i == 5 {
			fmt.Fprintf(&b, ", and %d more", len(msgs)-5)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(g.String())
	}
	return b.String()
}

func listSuffix(msgs []got) string {
	if len(msgs) == 0 {
		return ""
	}
	return " (" + listMsgs(msgs) + ")"
}
