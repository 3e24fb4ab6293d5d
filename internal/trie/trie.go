// Package trie routes MQTT topic names to the subscriptions whose topic filters match them
// (MQTT 5.0 section 4.7). The client's read loop uses it to fan each inbound PUBLISH out to
// its subscriptions.
package trie

import (
	"slices"
	"strings"
)

// Trie maps MQTT topic filters to values and finds every value whose filter matches a topic
// name.
//
// The zero value is an empty trie ready to use. A Trie is not safe for concurrent use: the
// caller holds a lock around every method. Filters are assumed valid (a wildcard fills its
// whole level, '#' only comes last); they are not checked again here.
type Trie[V comparable] struct {
	root node[V]
	n    int // (filter, value) entries
}

// node is one filter level. The wildcard children have their own fields so that Match never
// probes the map for them and a literal level cannot be confused with a wildcard.
type node[V comparable] struct {
	children map[string]*node[V] // literal levels; nil while there are none
	plus     *node[V]            // '+' child
	hash     *node[V]            // '#' child; always a leaf because '#' ends a filter
	values   []V                 // values whose filter ends here, oldest first
}

// Add stores v under filter. Adding the same (filter, v) again is a no-op; the same v may be
// stored under any number of filters. A shared-subscription filter "$share/{name}/{filter}" is
// stored under its inner filter, so it and the plain inner filter count as the same filter.
func (t *Trie[V]) Add(filter string, v V) {
	n := &t.root
	rest, more := innerFilter(filter), true
	for more {
		var level string
		level, rest, more = cutLevel(rest)
		n = n.makeChild(level)
	}
	if slices.Contains(n.values, v) {
		return
	}
	n.values = append(n.values, v)
	t.n++
}

// Remove deletes the entry (filter, v) and prunes the nodes it leaves empty. It reports
// whether the entry was present. Filter is read the same way as in Add.
func (t *Trie[V]) Remove(filter string, v V) bool {
	if !t.root.remove(innerFilter(filter), v) {
		return false
	}
	t.n--
	return true
}

// Match appends to dst every value whose filter matches topic and returns the extended
// slice. A value stored under several matching filters is appended once per filter: each
// overlapping subscription gets its own delivery, and the caller decides what to merge. The
// order of the result is unspecified.
//
// Match does not allocate unless dst has to grow. Its cost is proportional to the number of
// trie nodes the topic's levels reach, not to the number of filters.
func (t *Trie[V]) Match(topic string, dst []V) []V {
	// [MQTT-4.7.2-1] A filter starting with a wildcard must not match a topic name
	// starting with '$'; only the first level gets this treatment.
	wild := topic == "" || topic[0] != '$'
	return t.root.match(topic, wild, dst)
}

// Len returns the number of (filter, value) entries.
func (t *Trie[V]) Len() int { return t.n }

// match appends the values reached from n by the levels in topic, which holds at least one
// (possibly empty) level. Wildcard children are followed only when wild is set.
func (n *node[V]) match(topic string, wild bool, dst []V) []V {
	level, rest, more := cutLevel(topic)
	if wild {
		if n.hash != nil {
			dst = append(dst, n.hash.values...)
		}
		if n.plus != nil {
			dst = n.plus.descend(rest, more, dst)
		}
	}
	if c := n.children[level]; c != nil {
		dst = c.descend(rest, more, dst)
	}
	return dst
}

// descend continues a match at n, which has just consumed a topic level; more reports
// whether rest holds further levels.
func (n *node[V]) descend(rest string, more bool, dst []V) []V {
	if more {
		return n.match(rest, true, dst)
	}
	dst = append(dst, n.values...)
	// '#' also matches its parent level: "a/#" matches "a".
	if n.hash != nil {
		dst = append(dst, n.hash.values...)
	}
	return dst
}

// remove deletes v from the node that filter leads to below n and drops every child the
// removal leaves empty on the way back up.
func (n *node[V]) remove(filter string, v V) bool {
	level, rest, more := cutLevel(filter)
	c := n.child(level)
	if c == nil {
		return false
	}
	if more {
		if !c.remove(rest, v) {
			return false
		}
	} else {
		i := slices.Index(c.values, v)
		if i < 0 {
			return false
		}
		c.values = slices.Delete(c.values, i, i+1)
		if len(c.values) == 0 {
			c.values = nil // release the backing array of a node that stays for its children
		}
	}
	if c.empty() {
		n.dropChild(level)
	}
	return true
}

// child returns n's child for a filter level, or nil.
func (n *node[V]) child(level string) *node[V] {
	switch level {
	case "+":
		return n.plus
	case "#":
		return n.hash
	}
	return n.children[level]
}

// makeChild returns n's child for a filter level, creating it if needed.
func (n *node[V]) makeChild(level string) *node[V] {
	switch level {
	case "+":
		if n.plus == nil {
			n.plus = new(node[V])
		}
		return n.plus
	case "#":
		if n.hash == nil {
			n.hash = new(node[V])
		}
		return n.hash
	}
	if c := n.children[level]; c != nil {
		return c
	}
	if n.children == nil {
		n.children = make(map[string]*node[V])
	}
	c := new(node[V])
	// Clone so the key pins only the level, not the caller's whole filter string.
	n.children[strings.Clone(level)] = c
	return c
}

// dropChild unlinks n's child for a filter level.
func (n *node[V]) dropChild(level string) {
	switch level {
	case "+":
		n.plus = nil
	case "#":
		n.hash = nil
	default:
		delete(n.children, level)
		if len(n.children) == 0 {
			n.children = nil
		}
	}
}

// empty reports whether n holds no values and has no children, so it can be pruned.
func (n *node[V]) empty() bool {
	return len(n.values) == 0 && len(n.children) == 0 && n.plus == nil && n.hash == nil
}

// cutLevel splits s at its first '/' into the first level and the rest; more reports
// whether there was a separator. Adjacent separators yield empty levels, which are real
// levels (section 4.7.1.1).
func cutLevel(s string) (level, rest string, more bool) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// innerFilter strips the "$share/{ShareName}/" prefix of a shared subscription (section
// 4.8.2): messages are matched against the filter that follows it.
func innerFilter(filter string) string {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			return rest[i+1:]
		}
	}
	return filter
}
