package tern

import "github.com/ternmq/tern/packet"

// aliasTable assigns outbound topic aliases for one connection. It is used under the
// connection writer's lock, so aliases are assigned in the order packets are written and
// the broker always learns an alias before its first use.
type aliasTable struct {
	max    uint16
	byName map[string]uint16
}

func newAliasTable(max uint16) *aliasTable {
	return &aliasTable{max: max, byName: make(map[string]uint16)}
}

// apply rewrites p to use an alias: the topic is dropped when an alias for it is known, and
// a new alias is sent along with the topic while free ones remain. Topics beyond the table's
// size go out in full.
func (a *aliasTable) apply(p *packet.Publish) {
	if id, ok := a.byName[p.Topic]; ok {
		p.TopicAlias, p.Topic = id, ""
		return
	}
	if len(a.byName) >= int(a.max) {
		return
	}
	id := uint16(len(a.byName) + 1)
	// The key must not alias a read buffer or the caller's memory.
	a.byName[string([]byte(p.Topic))] = id
	p.TopicAlias = id
}
