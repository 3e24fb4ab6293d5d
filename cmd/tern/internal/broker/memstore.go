package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// memStore is a mochi storage hook that keeps sessions, subscriptions, in-flight and retained
// messages in memory. One memStore outlives the mochi servers of a Broker: each new server
// loads it at Serve (the Stored* methods), so a Restart keeps every session. With a snapshot
// file it also survives the process, as of the last save.
//
// mochi calls hooks from every client goroutine at once, so everything goes through mu.
type memStore struct {
	mqtt.HookBase

	mu       sync.Mutex
	clients  map[string]storage.Client
	subs     map[string]map[string]storage.Subscription // client id → filter
	inflight map[string]map[uint16]storage.Message      // client id → packet id
	retained map[string]storage.Message                 // topic
	changes  uint64                                     // bumped on every change, for the saver
}

func newMemStore() *memStore {
	return &memStore{
		clients:  make(map[string]storage.Client),
		subs:     make(map[string]map[string]storage.Subscription),
		inflight: make(map[string]map[uint16]storage.Message),
		retained: make(map[string]storage.Message),
	}
}

func (h *memStore) ID() string { return "tern-memstore" }

func (h *memStore) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnRetainMessage, mqtt.OnWillSent, mqtt.OnQosPublish, mqtt.OnQosComplete,
		mqtt.OnQosDropped, mqtt.OnClientExpired, mqtt.OnRetainedExpired,
		mqtt.StoredClients, mqtt.StoredSubscriptions, mqtt.StoredInflightMessages,
		mqtt.StoredRetainedMessages:
		return true
	}
	return false
}

// Init is called each time the hook is added to a server; the state stays as it is.
func (h *memStore) Init(any) error { return nil }

// Stop is called when a server closes; the state stays for the next one.
func (h *memStore) Stop() error { return nil }

func (h *memStore) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) { h.putClient(cl) }

func (h *memStore) OnWillSent(cl *mqtt.Client, _ packets.Packet) { h.putClient(cl) }

func (h *memStore) putClient(cl *mqtt.Client) {
	p := cl.Properties.Props
	rec := storage.Client{
		ID:              cl.ID,
		T:               storage.ClientKey,
		Remote:          cl.Net.Remote,
		Listener:        cl.Net.Listener,
		Username:        bytes.Clone(cl.Properties.Username),
		Clean:           cl.Properties.Clean,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval:     p.SessionExpiryInterval,
			SessionExpiryIntervalFlag: p.SessionExpiryIntervalFlag,
			AuthenticationMethod:      p.AuthenticationMethod,
			AuthenticationData:        bytes.Clone(p.AuthenticationData),
			RequestProblemInfo:        p.RequestProblemInfo,
			RequestProblemInfoFlag:    p.RequestProblemInfoFlag,
			RequestResponseInfo:       p.RequestResponseInfo,
			ReceiveMaximum:            p.ReceiveMaximum,
			TopicAliasMaximum:         p.TopicAliasMaximum,
			User:                      p.User,
			MaximumPacketSize:         p.MaximumPacketSize,
		},
		Will: storage.ClientWill(cl.Properties.Will),
	}
	h.mu.Lock()
	h.clients[cl.ID] = rec
	h.changes++
	h.mu.Unlock()
}

// OnDisconnect forgets a session that ends with its connection. A session taken over by a
// new connection is left alone: the new one owns the record now.
func (h *memStore) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if !expire || errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		return
	}
	h.mu.Lock()
	delete(h.clients, cl.ID)
	h.changes++
	h.mu.Unlock()
}

// OnClientExpired forgets everything of a session whose expiry passed.
func (h *memStore) OnClientExpired(cl *mqtt.Client) {
	h.mu.Lock()
	delete(h.clients, cl.ID)
	delete(h.subs, cl.ID)
	delete(h.inflight, cl.ID)
	h.changes++
	h.mu.Unlock()
}

func (h *memStore) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.subs[cl.ID]
	if m == nil {
		m = make(map[string]storage.Subscription)
		h.subs[cl.ID] = m
	}
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= 0x80 {
			continue // refused: nothing to keep
		}
		m[f.Filter] = storage.Subscription{
			ID:                cl.ID + ":" + f.Filter,
			T:                 storage.SubscriptionKey,
			Client:            cl.ID,
			Filter:            f.Filter,
			Qos:               codes[i],
			Identifier:        f.Identifier,
			NoLocal:           f.NoLocal,
			RetainHandling:    f.RetainHandling,
			RetainAsPublished: f.RetainAsPublished,
		}
	}
	h.changes++
}

func (h *memStore) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range pk.Filters {
		delete(h.subs[cl.ID], f.Filter)
	}
	if len(h.subs[cl.ID]) == 0 {
		delete(h.subs, cl.ID)
	}
	h.changes++
}

// OnRetainMessage stores or (r == -1: an empty retained payload) removes a retained message.
func (h *memStore) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.changes++
	if r == -1 {
		delete(h.retained, pk.TopicName)
		return
	}
	m := toStored(cl.ID, pk)
	m.T = storage.RetainedKey
	h.retained[pk.TopicName] = m
}

func (h *memStore) OnRetainedExpired(topic string) {
	h.mu.Lock()
	delete(h.retained, topic)
	h.changes++
	h.mu.Unlock()
}

// OnQosPublish records a QoS 1/2 exchange in progress: an outbound PUBLISH or the
// acknowledgement of an inbound one, keyed by packet identifier.
func (h *memStore) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, _ int) {
	m := toStored(cl.ID, pk)
	m.T = storage.InflightKey
	m.Sent = sent
	h.mu.Lock()
	defer h.mu.Unlock()
	byID := h.inflight[cl.ID]
	if byID == nil {
		byID = make(map[uint16]storage.Message)
		h.inflight[cl.ID] = byID
	}
	byID[pk.PacketID] = m
	h.changes++
}

func (h *memStore) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	h.dropInflight(cl.ID, pk.PacketID)
}

func (h *memStore) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	h.dropInflight(cl.ID, pk.PacketID)
}

func (h *memStore) dropInflight(client string, id uint16) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if byID := h.inflight[client]; byID != nil {
		delete(byID, id)
		if len(byID) == 0 {
			delete(h.inflight, client)
		}
	}
	h.changes++
}

// toStored converts a packet to mochi's storable form. mochi decodes every packet into
// fresh memory and never writes to it afterwards, so the slices are shared, not copied.
// The ID field, a key for mochi's database hooks, is left empty: nothing here needs it.
func toStored(client string, pk packets.Packet) storage.Message {
	p := pk.Properties
	return storage.Message{
		Client:      client,
		Origin:      pk.Origin,
		FixedHeader: pk.FixedHeader,
		TopicName:   pk.TopicName,
		Payload:     pk.Payload,
		Created:     pk.Created,
		PacketID:    pk.PacketID,
		Properties: storage.MessageProperties{
			PayloadFormat:          p.PayloadFormat,
			PayloadFormatFlag:      p.PayloadFormatFlag,
			MessageExpiryInterval:  p.MessageExpiryInterval,
			ContentType:            p.ContentType,
			ResponseTopic:          p.ResponseTopic,
			CorrelationData:        p.CorrelationData,
			SubscriptionIdentifier: p.SubscriptionIdentifier,
			User:                   p.User,
			// TopicAlias is per connection and must not be restored.
		},
	}
}

func (h *memStore) StoredClients() ([]storage.Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]storage.Client, 0, len(h.clients))
	for _, c := range h.clients {
		out = append(out, c)
	}
	return out, nil
}

func (h *memStore) StoredSubscriptions() ([]storage.Subscription, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []storage.Subscription
	for _, m := range h.subs {
		for _, s := range m {
			out = append(out, s)
		}
	}
	return out, nil
}

func (h *memStore) StoredInflightMessages() ([]storage.Message, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []storage.Message
	for _, m := range h.inflight {
		for _, msg := range m {
			out = append(out, msg)
		}
	}
	return out, nil
}

func (h *memStore) StoredRetainedMessages() ([]storage.Message, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]storage.Message, 0, len(h.retained))
	for _, m := range h.retained {
		out = append(out, m)
	}
	return out, nil
}

// snapshot is the file format of a saved memStore.
type snapshot struct {
	Version  int                    `json:"version"`
	Clients  []storage.Client       `json:"clients"`
	Subs     []storage.Subscription `json:"subscriptions"`
	Inflight []storage.Message      `json:"inflight"`
	Retained []storage.Message      `json:"retained"`
}

const (
	snapshotVersion = 1
	snapshotName    = "tern-broker.json"
)

// changeCount returns a number that differs whenever the state has changed.
func (h *memStore) changeCount() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changes
}

// save writes the state to dir atomically: a temporary file, synced, renamed over the old
// snapshot, then the directory synced, so a crash leaves either snapshot whole.
func (h *memStore) save(dir string) error {
	var s snapshot
	s.Version = snapshotVersion
	s.Clients, _ = h.StoredClients()
	s.Subs, _ = h.StoredSubscriptions()
	s.Inflight, _ = h.StoredInflightMessages()
	s.Retained, _ = h.StoredRetainedMessages()
	data, err := json.Marshal(&s)
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	tmp, err := os.CreateTemp(dir, snapshotName+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, snapshotName)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// load replaces the state with the snapshot in dir, if there is one.
func (h *memStore) load(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, snapshotName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var s snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("decode snapshot: %w", err)
	}
	if s.Version != snapshotVersion {
		return fmt.Errorf("snapshot version %d, want %d", s.Version, snapshotVersion)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range s.Clients {
		h.clients[c.ID] = c
	}
	for _, sub := range s.Subs {
		m := h.subs[sub.Client]
		if m == nil {
			m = make(map[string]storage.Subscription)
			h.subs[sub.Client] = m
		}
		m[sub.Filter] = sub
	}
	for _, msg := range s.Inflight {
		m := h.inflight[msg.Client]
		if m == nil {
			m = make(map[uint16]storage.Message)
			h.inflight[msg.Client] = m
		}
		m[msg.PacketID] = msg
	}
	for _, msg := range s.Retained {
		h.retained[msg.TopicName] = msg
	}
	return nil
}
