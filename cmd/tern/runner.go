package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/cmd/tern/internal/broker"
	"github.com/ternmq/tern/internal/faultproxy"
	"github.com/ternmq/tern/packet"
)

// Defaults of a scenario run.
const (
	defaultScenarioTimeout = 5 * time.Minute // a whole scenario
	defaultWithin          = 5 * time.Second // expect: how long to wait for messages
	defaultConnectTimeout  = 10 * time.Second
	defaultSessionExpiry   = time.Hour // session register, when the client sets none
)

// stepError is a failed step: the message is what the user reads.
type stepError struct{ msg string }

func (e *stepError) Error() string { return e.msg }

func failf(format string, args ...any) error { return &stepError{fmt.Sprintf(format, args...)} }

// runner runs one scenario. Steps run one after another, except the members of a
// parallel group; mu guards the maps for those.
type runner struct {
	sc     *scenario
	broker string // --broker: the default for clients that name none; "" = embedded
	ev     *eventLog
	runID  string

	mu      sync.Mutex
	emb     *broker.Broker // the embedded broker, started on first use
	proxies map[string]*faultproxy.Proxy
	clients map[string]*liveClient
	subs    map[string]*collector
}

// liveClient is a named client's state during a run.
type liveClient struct {
	name       string
	spec       *clientSpec
	id         string
	c          *tern.Client // nil until a step needs it; nil again after disconnect
	connected  bool
	persistent bool        // a session was registered: Clean Start 0 from now on
	sessions   []*register // filters re-routed on each connect of a registered session
	pending    []*tern.Subscription
}

type register struct {
	filters []tern.TopicFilter
	col     *collector
}

func newRunner(sc *scenario, brokerFlag string, ev *eventLog) *runner {
	var b [4]byte
	rand.Read(b[:])
	return &runner{sc: sc, broker: brokerFlag, ev: ev, runID: hex.EncodeToString(b[:]),
		proxies: map[string]*faultproxy.Proxy{}, clients: map[string]*liveClient{}, subs: map[string]*collector{}}
}

// usesEmbedded reports whether client n connects to the embedded broker.
func (r *runner) brokerFor(n string) string {
	spec := r.sc.clients[n]
	switch {
	case spec.Broker != "":
		return expand(spec.Broker, r.sc.vars, 0)
	case r.sc.broker != "":
		return expand(r.sc.broker, r.sc.vars, 0)
	}
	return r.broker
}

// checkFaults refuses fault steps on a scenario whose clients use an external broker.
func (r *runner) checkFaults(steps []*step) error {
	for _, s := range steps {
		if err := r.checkFaults(s.Parallel); err != nil {
			return err
		}
		if s.Cut != nil && r.brokerFor(s.Cut.s) != "" {
			return errAt(s.Cut.at, "cut: client %q uses an external broker; cut works on the embedded broker only", s.Cut.s)
		}
		if s.RestartBroker != nil {
			for n := range r.sc.clients {
				if r.brokerFor(n) != "" {
					return errAt(s.at, "restart_broker: client %q uses an external broker; restart works on the embedded broker only", n)
				}
			}
		}
	}
	return nil
}

// run runs every step; it returns the index path of the failed step and why.
func (r *runner) run(ctx context.Context) (failed *step, err error) {
	defer func() {
		// A broker that cannot be closed (mochi deadlocked, abandoned after a while) is
		// reported, so a run that otherwise passed does not hide it.
		if cerr := r.close(); cerr != nil && err == nil {
			err = fmt.Errorf("embedded broker: %w", cerr)
		}
	}()
	timeout := defaultScenarioTimeout
	if r.sc.timeout.set {
		timeout = r.sc.timeout.d
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for i, s := range r.sc.steps {
		if failed, err := r.step(ctx, i+1, s); err != nil {
			if ctx.Err() != nil && !errors.As(err, new(*stepError)) {
				err = failf("scenario timeout %v reached: %v", timeout, err)
			}
			return failed, err
		}
	}
	return nil, nil
}

// step runs one step and reports its start and end.
func (r *runner) step(ctx context.Context, n int, s *step) (*step, error) {
	start := time.Now()
	r.ev.stepStart(r.sc, n, s)
	failed, err := s, r.do(ctx, s)
	if s.Parallel != nil && err != nil {
		failed = err.(*parallelError).step
		err = err.(*parallelError).err
	}
	r.ev.stepEnd(r.sc, n, s, time.Since(start), err)
	return failed, err
}

type parallelError struct {
	step *step
	err  error
}

func (e *parallelError) Error() string { return e.err.Error() }

func (r *runner) do(ctx context.Context, s *step) error {
	switch {
	case s.Connect != nil:
		return r.connect(ctx, s.Connect.s)
	case s.Disconnect != nil:
		return r.disconnect(ctx, s.Disconnect)
	case s.Subscribe != nil:
		return r.subscribe(ctx, s.Subscribe)
	case s.Unsubscribe != nil:
		return r.unsubscribe(ctx, s.Unsubscribe)
	case s.Publish != nil:
		return r.publish(ctx, s.Publish)
	case s.Expect != nil:
		return r.expect(ctx, s.Expect)
	case s.Session != nil:
		return r.session(ctx, s.Session)
	case s.Wait != nil:
		return sleepCtx(ctx, s.Wait.d)
	case s.Cut != nil:
		return r.cut(s.Cut.s)
	case s.RestartBroker != nil:
		return r.restartBroker()
	case s.Parallel != nil:
		return r.parallel(ctx, s.Parallel)
	case s.venom != nil:
		return r.venomStep(ctx, s.venom)
	}
	return failf("empty step")
}

func (r *runner) parallel(ctx context.Context, steps []*step) error {
	var wg sync.WaitGroup
	errs := make([]error, len(steps))
	for i, s := range steps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.do(ctx, s)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return &parallelError{steps[i], err}
		}
	}
	return nil
}

// sleepCtx waits d, or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close disconnects every client and stops the embedded broker and proxies. It returns the
// embedded broker's Close error.
func (r *runner) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.clients))
	for n := range r.clients {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		lc := r.clients[n]
		if lc.c == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		lc.c.Disconnect(ctx)
		cancel()
		lc.c = nil
	}
	for _, p := range r.proxies {
		p.Close()
	}
	if r.emb != nil {
		return r.emb.Close()
	}
	return nil
}

// live returns client n's state, creating it on first use.
func (r *runner) live(n string) *liveClient {
	r.mu.Lock()
	defer r.mu.Unlock()
	lc := r.clients[n]
	if lc == nil {
		spec := r.sc.clients[n]
		id := expand(spec.ClientID, r.sc.vars, 0)
		if id == "" {
			id = "tern-run-" + r.runID + "-" + n
		}
		lc = &liveClient{name: n, spec: spec, id: id}
		r.clients[n] = lc
	}
	return lc
}

// ensure returns client n with a tern.Client built (not necessarily connected).
func (r *runner) ensure(n string) (*liveClient, error) {
	lc := r.live(n)
	if lc.c != nil {
		return lc, nil
	}
	opts, err := r.clientOptions(lc, lc.persistent, nil)
	if err != nil {
		return nil, err
	}
	if regs := append([]*register(nil), lc.sessions...); len(regs) > 0 {
		// The broker kept the registered subscriptions: what the resumed session
		// delivers matches no subscription of this new client, so the unrouted handler
		// hands it to the registration's collector. Subscribing again would work too,
		// but mochi refuses a SUBSCRIBE whose packet id it uses for its own queued
		// messages (0x91).
		opts = append(opts, tern.WithUnroutedHandler(func(m *tern.Message) {
			for _, reg := range regs {
				if reg.matches(m.Topic) {
					reg.col.receive(m)
					return
				}
			}
		}))
	}
	c, err := tern.New(opts...)
	if err != nil {
		return nil, failf("client %s: %v", n, err)
	}
	lc.c = c
	return lc, nil
}

func (reg *register) matches(topic string) bool {
	for _, f := range reg.filters {
		if topicMatches(f.Topic, topic) {
			return true
		}
	}
	return false
}

// brokerURL returns the URL client n connects to: its own, the file's, --broker, or a
// proxy of its own in front of the embedded broker.
func (r *runner) brokerURL(n string, tlsOn bool) (string, error) {
	if b := r.brokerFor(n); b != "" {
		u, err := parseBrokerArg(b)
		if err != nil {
			return "", failf("client %s: %v", n, err)
		}
		if tlsOn {
			switch u.Scheme { // the port is the file's to say
			case "mqtt", "tcp":
				u.Scheme = "mqtts"
			case "ws":
				u.Scheme = "wss"
			}
		}
		return u.String(), nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.emb == nil {
		b, err := broker.Start("127.0.0.1:0", broker.Options{})
		if err != nil {
			return "", failf("embedded broker: %v", err)
		}
		r.emb = b
	}
	px := r.proxies[n]
	if px == nil {
		var err error
		if px, err = faultproxy.Start("127.0.0.1:0", r.emb.Addr()); err != nil {
			return "", failf("proxy for %s: %v", n, err)
		}
		r.proxies[n] = px
	}
	return "mqtt://" + px.Addr(), nil
}

// clientOptions turns a client's definition into options. persistent forces Clean Start
// 0 with a session that outlives the connection; expiryOverride, when set, wins.
func (r *runner) clientOptions(lc *liveClient, persistent bool, expiryOverride *time.Duration) ([]tern.Option, error) {
	spec, vars := lc.spec, r.sc.vars
	tlsCfg, err := r.tlsConfig(lc.name, spec.TLS)
	if err != nil {
		return nil, err
	}
	url, err := r.brokerURL(lc.name, tlsCfg != nil)
	if err != nil {
		return nil, err
	}
	ct := defaultConnectTimeout
	if spec.ConnectTimeout.set {
		ct = spec.ConnectTimeout.d
	}
	opts := []tern.Option{
		tern.WithBroker(url), tern.WithClientID(lc.id), tern.WithConnectTimeout(ct), wsTransport,
		tern.WithReconnectBackoff(tern.ExponentialBackoff{Min: 10 * time.Millisecond, Max: 500 * time.Millisecond, Jitter: 0.2}),
	}
	if tlsCfg != nil {
		opts = append(opts, tern.WithTLSConfig(tlsCfg))
	}
	if spec.Username != "" || spec.Password != nil {
		var pw []byte
		if spec.Password != nil {
			pw = []byte(expand(*spec.Password, vars, 0))
		}
		opts = append(opts, tern.WithCredentials(expand(spec.Username, vars, 0), pw))
	}
	if spec.KeepAlive.set {
		if spec.KeepAlive.d == 0 {
			opts = append(opts, tern.WithoutKeepAlive())
		} else {
			opts = append(opts, tern.WithKeepAlive(spec.KeepAlive.d))
		}
	}
	clean := spec.CleanStart == nil || *spec.CleanStart
	var exp time.Duration
	if spec.SessionExpiry != nil {
		exp = spec.SessionExpiry.d
		if spec.SessionExpiry.never {
			exp = math.MaxUint32 * time.Second
		}
	}
	if persistent {
		clean = false
		if exp == 0 {
			exp = defaultSessionExpiry
		}
	}
	if expiryOverride != nil {
		exp = *expiryOverride
	}
	opts = append(opts, tern.WithCleanStart(clean))
	if exp > 0 {
		opts = append(opts, tern.WithSessionExpiry(exp))
	}
	if p, err := parseProtocol(spec.Protocol.s); err != nil {
		return nil, err // the validator reported it
	} else if p != tern.MQTT5 {
		opts = append(opts, tern.WithProtocol(p))
	}
	if spec.ReceiveMaximum > 0 {
		opts = append(opts, tern.WithReceiveMaximum(uint16(spec.ReceiveMaximum)))
	}
	if spec.MaxPacketSize > 0 {
		opts = append(opts, tern.WithMaximumPacketSize(uint32(spec.MaxPacketSize)))
	}
	for _, p := range spec.UserProperties.kv {
		opts = append(opts, tern.WithConnectUserProperty(p.k, expand(p.v, vars, 0)))
	}
	if spec.RequestProblem != nil {
		opts = append(opts, tern.WithRequestProblemInformation(*spec.RequestProblem))
	}
	if spec.RequestResponse {
		opts = append(opts, tern.WithRequestResponseInformation(true))
	}
	if spec.Will != nil {
		m, err := r.message(spec.Will, nil, 0)
		if err != nil {
			return nil, err
		}
		opts = append(opts, tern.WithWill(&packet.Will{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS,
			Retain: m.Retain, PayloadFormat: m.PayloadFormat, ContentType: m.ContentType,
			ResponseTopic: m.ResponseTopic, CorrelationData: m.CorrelationData,
			MessageExpiry: uint32(m.MessageExpiry / time.Second), UserProperties: m.UserProperties}))
	}
	return opts, nil
}

// tlsConfig loads a client's TLS files; nil when it has none.
func (r *runner) tlsConfig(n string, t *tlsSpec) (*tls.Config, error) {
	if t == nil {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.Insecure,
		ServerName: expand(t.ServerName, r.sc.vars, 0)}
	if t.CA != nil {
		path := r.sc.path(expand(t.CA.s, r.sc.vars, 0))
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, failf("client %s: tls ca: %v", n, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, failf("client %s: tls ca %s: no PEM certificate in it", n, t.CA.s)
		}
		cfg.RootCAs = pool
	}
	if t.Cert != nil && t.Key != nil {
		pair, err := tls.LoadX509KeyPair(r.sc.path(expand(t.Cert.s, r.sc.vars, 0)), r.sc.path(expand(t.Key.s, r.sc.vars, 0)))
		if err != nil {
			return nil, failf("client %s: tls cert/key: %v", n, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// connect connects client n, then waits for the broker's answer to the subscriptions
// made before the connection.
func (r *runner) connect(ctx context.Context, n string) error {
	lc, err := r.ensure(n)
	if err != nil {
		return err
	}
	if lc.connected {
		return failf("connect %s: already connected", n)
	}
	if err := lc.c.Connect(ctx); err != nil {
		return failf("connect %s: %v", n, err)
	}
	lc.connected = true
	for _, s := range lc.pending {
		if err := s.Wait(ctx); err != nil {
			return failf("connect %s: subscribe %s: %v", n, filterNames(s.Filters()), err)
		}
	}
	lc.pending = nil
	return nil
}

func filterNames(fs []tern.TopicFilter) string {
	var s []string
	for _, f := range fs {
		s = append(s, f.Topic)
	}
	return strings.Join(s, ",")
}

func (r *runner) disconnect(ctx context.Context, d *disconnectSpec) error {
	lc := r.live(d.Client.s)
	if lc.c == nil || !lc.connected {
		return failf("disconnect %s: not connected", lc.name)
	}
	o := tern.DisconnectOptions{ReasonCode: packet.ReasonCode(d.Reason)}
	if d.SessionExpiry != nil {
		e := d.SessionExpiry.d
		if d.SessionExpiry.never {
			e = math.MaxUint32 * time.Second
		}
		o.SessionExpiry = &e
	}
	err := lc.c.DisconnectWith(ctx, o)
	lc.c, lc.connected, lc.pending = nil, false, nil
	if err != nil {
		return failf("disconnect %s: %v", lc.name, err)
	}
	return nil
}

// filtersOf expands a list of filter specs; qos, when set, is the default QoS.
func (r *runner) filtersOf(fs []*filterSpec, qos *int) []tern.TopicFilter {
	out := make([]tern.TopicFilter, 0, len(fs))
	for _, f := range fs {
		q := f.QoS
		if qos != nil && q == 0 {
			q = *qos
		}
		out = append(out, tern.TopicFilter{Topic: expand(f.Topic, r.sc.vars, 0), QoS: byte(q), NoLocal: f.NoLocal,
			RetainAsPublished: f.RetainAsPublished, RetainHandling: byte(f.RetainHandling)})
	}
	return out
}

// collectorFor returns a fresh collector named name (a subscription made again replaces
// the old one's messages).
func (r *runner) collectorFor(name string) *collector {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := newCollector(name, r.ev, r.sc)
	r.subs[name] = c
	return c
}

func (r *runner) subscribe(ctx context.Context, s *subscribeSpec) error {
	lc, err := r.ensure(s.Client.s)
	if err != nil {
		return err
	}
	name := subName(s.As, s.Filters)
	col := r.collectorFor(name)
	var opts []tern.SubOption
	if s.Identifier > 0 {
		opts = append(opts, tern.SubIdentifier(uint32(s.Identifier)))
	}
	for _, p := range s.UserProperties.kv {
		opts = append(opts, tern.SubUserProperty(p.k, expand(p.v, r.sc.vars, 0)))
	}
	sub, err := lc.c.SubscribeCallback(ctx, r.filtersOf(s.Filters, s.QoS), col.receive, opts...)
	if err != nil {
		return failf("subscribe %s: %v", name, err)
	}
	col.sub = sub
	if !lc.connected {
		lc.pending = append(lc.pending, sub)
	}
	return nil
}

func (r *runner) unsubscribe(ctx context.Context, u *unsubSpec) error {
	r.mu.Lock()
	col := r.subs[u.Subscription.s]
	r.mu.Unlock()
	if col == nil || col.sub == nil {
		return failf("unsubscribe %s: no live subscription", u.Subscription.s)
	}
	if err := col.sub.Unsubscribe(ctx); err != nil {
		return failf("unsubscribe %s: %v", u.Subscription.s, err)
	}
	return nil
}

func (r *runner) cut(n string) error {
	r.mu.Lock()
	px := r.proxies[n]
	r.mu.Unlock()
	if px == nil || px.Cut() == 0 {
		return failf("cut %s: no connection to cut", n)
	}
	return nil
}

func (r *runner) restartBroker() error {
	r.mu.Lock()
	b := r.emb
	r.mu.Unlock()
	if b == nil {
		return failf("restart_broker: the embedded broker is not running (no client connected yet)")
	}
	if err := b.Restart(); err != nil {
		return failf("restart_broker: %v", err)
	}
	return nil
}

// session registers or releases a persistent session.
func (r *runner) session(ctx context.Context, s *sessionSpec) error {
	lc := r.live(s.Client.s)
	if lc.connected {
		return failf("session %s: the client is connected; disconnect it first", lc.name)
	}
	if s.Release {
		return r.release(ctx, lc)
	}
	lc.persistent = true
	lc.c = nil
	name := subName(s.As, s.Register)
	reg := &register{filters: r.filtersOf(s.Register, nil), col: r.collectorFor(name)}
	if _, err := r.ensure(lc.name); err != nil {
		return err
	}
	sub, err := lc.c.SubscribeCallback(ctx, reg.filters, reg.col.receive)
	if err != nil {
		return failf("session %s: %v", lc.name, err)
	}
	lc.pending = append(lc.pending, sub)
	if err := r.connect(ctx, lc.name); err != nil {
		return failf("session %s: %v", lc.name, err)
	}
	lc.sessions = append(lc.sessions, reg)
	err = lc.c.Disconnect(ctx)
	lc.c, lc.connected = nil, false
	if err != nil {
		return failf("session %s: disconnect: %v", lc.name, err)
	}
	return nil
}

// release connects with Clean Start 1 and leaves with session expiry 0: the broker drops
// the session and what it queued.
func (r *runner) release(ctx context.Context, lc *liveClient) error {
	zero := time.Duration(0)
	opts, err := r.clientOptions(lc, false, &zero)
	if err != nil {
		return err
	}
	c, err := tern.New(append(opts, tern.WithCleanStart(true))...)
	if err != nil {
		return failf("session %s: %v", lc.name, err)
	}
	if err := c.Connect(ctx); err != nil {
		return failf("session %s: release: connect: %v", lc.name, err)
	}
	if err := c.Disconnect(ctx); err != nil {
		return failf("session %s: release: %v", lc.name, err)
	}
	lc.persistent, lc.sessions, lc.c = false, nil, nil
	return nil
}
