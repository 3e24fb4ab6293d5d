package trie

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// nodeCount counts the nodes under and including n; an empty trie has just its root.
func (n *node[V]) nodeCount() int {
	c := 1
	for _, ch := range n.children {
		c += ch.nodeCount()
	}
	if n.plus != nil {
		c += n.plus.nodeCount()
	}
	if n.hash != nil {
		c += n.hash.nodeCount()
	}
	return c
}

// TestMatch stores each filter with itself as the value, so the result names the filters
// that matched.
func TestMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		filters []string
		topic   string
		want    []string
	}{
		{"exact", []string{"a/b", "a", "a/b/c", "a/c"}, "a/b", []string{"a/b"}},
		{"exact no prefix", []string{"a"}, "a/b", nil},
		{"exact case sensitive", []string{"A/b"}, "a/b", nil},
		{"plus one level", []string{"a/+"}, "a/b", []string{"a/+"}},
		{"plus not two levels", []string{"a/+"}, "a/b/c", nil},
		{"plus not zero levels", []string{"a/+"}, "a", nil},
		{"plus empty level", []string{"a/+"}, "a/", []string{"a/+"}},
		{"plus middle", []string{"a/+/c", "a/+/d"}, "a/b/c", []string{"a/+/c"}},
		{"plus plus", []string{"+/+", "+", "/+"}, "/finance", []string{"+/+", "/+"}},
		{"plus plus too short", []string{"+/+"}, "a", nil},
		{"plus plus too long", []string{"+/+"}, "a/b/c", nil},
		{"plus plus empty levels", []string{"+/+", "+"}, "/", []string{"+/+"}},
		{"hash parent", []string{"a/#"}, "a", []string{"a/#"}},
		{"hash child", []string{"a/#"}, "a/b", []string{"a/#"}},
		{"hash grandchild", []string{"a/#"}, "a/b/c", []string{"a/#"}},
		{"hash empty child", []string{"a/#"}, "a/", []string{"a/#"}},
		{"hash other prefix", []string{"a/#"}, "ab/c", nil},
		{"hash deep parent", []string{"a/b/#"}, "a", nil},
		{"hash root", []string{"#"}, "a/b/c", []string{"#"}},
		{"hash root one level", []string{"#"}, "a", []string{"#"}},
		{"hash root separators", []string{"#"}, "/", []string{"#"}},
		{"plus hash parent", []string{"+/#"}, "a", []string{"+/#"}},
		{"plus hash deep", []string{"+/#", "+/b/#"}, "a/b/c", []string{"+/#", "+/b/#"}},
		{"dollar not by hash", []string{"#"}, "$SYS/x", nil},
		{"dollar not by plus", []string{"+/x", "+/+", "+"}, "$SYS/x", nil},
		{"dollar not by plus hash", []string{"+/#"}, "$SYS", nil},
		{"dollar by literal", []string{"$SYS/#", "$SYS/+", "$SYS/x"}, "$SYS/x",
			[]string{"$SYS/#", "$SYS/+", "$SYS/x"}},
		{"dollar hash parent", []string{"$SYS/#"}, "$SYS", []string{"$SYS/#"}},
		{"dollar only first level", []string{"a/+", "a/#", "+/$x"}, "a/$x",
			[]string{"a/+", "a/#", "+/$x"}},
		{"dollar alone", []string{"$", "#", "+"}, "$", []string{"$"}},
		{"empty levels exact", []string{"a//b", "a/b"}, "a//b", []string{"a//b"}},
		{"empty levels no collapse", []string{"a//b"}, "a/b", nil},
		{"empty level by plus", []string{"a/+/b"}, "a//b", []string{"a/+/b"}},
		{"leading empty level", []string{"/a", "a", "+/a"}, "/a", []string{"/a", "+/a"}},
		{"trailing empty level", []string{"a/", "a"}, "a/", []string{"a/"}},
		{"only separators", []string{"//", "+/+/+", "/", "+/+"}, "//", []string{"//", "+/+/+"}},
		{"shared exact", []string{"$share/g/a/b"}, "a/b", []string{"$share/g/a/b"}},
		{"shared plus", []string{"$share/g/a/+"}, "a/b", []string{"$share/g/a/+"}},
		{"shared hash", []string{"$share/g/#"}, "a/b", []string{"$share/g/#"}},
		{"shared hash not dollar", []string{"$share/g/#"}, "$SYS/x", nil},
		{"shared dollar", []string{"$share/g/$SYS/+"}, "$SYS/x", []string{"$share/g/$SYS/+"}},
		{"shared name not a level", []string{"$share/g/a"}, "g/a", nil},
		{"shared not the prefix", []string{"$share/g/a"}, "$share/g/a", nil},
		{"overlapping", []string{"a/b", "a/+", "a/#", "#", "+/b", "+/+", "+/#", "b/#", "a/b/c"}, "a/b",
			[]string{"a/b", "a/+", "a/#", "#", "+/b", "+/+", "+/#"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var tr Trie[string]
			for _, f := range tt.filters {
				tr.Add(f, f)
			}
			got := tr.Match(tt.topic, nil)
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tt.want))
			if !slices.Equal(got, want) {
				t.Errorf("Match(%q) = %q, want %q", tt.topic, got, want)
			}
		})
	}
}

func TestZeroValue(t *testing.T) {
	t.Parallel()
	var tr Trie[int]
	if got := tr.Match("a/b", nil); len(got) != 0 {
		t.Errorf("Match on empty trie = %v", got)
	}
	if tr.Remove("a/b", 1) {
		t.Error("Remove on empty trie reported true")
	}
	if tr.Len() != 0 {
		t.Errorf("Len = %d", tr.Len())
	}
}

func TestMatchAppends(t *testing.T) {
	t.Parallel()
	var tr Trie[int]
	tr.Add("a", 2)
	got := tr.Match("a", []int{1})
	if !slices.Equal(got, []int{1, 2}) {
		t.Errorf("Match = %v, want [1 2]", got)
	}
}

func TestDuplicates(t *testing.T) {
	t.Parallel()
	var tr Trie[int]
	tr.Add("a/b", 1)
	tr.Add("a/b", 1)
	if tr.Len() != 1 {
		t.Fatalf("Len after adding the same entry twice = %d, want 1", tr.Len())
	}
	// The shared form has the same inner filter, so it is the same entry.
	tr.Add("$share/g/a/b", 1)
	if tr.Len() != 1 {
		t.Fatalf("Len after adding the shared form = %d, want 1", tr.Len())
	}
	tr.Add("a/b", 2)
	tr.Add("a/+", 1)
	tr.Add("#", 1)
	if tr.Len() != 4 {
		t.Fatalf("Len = %d, want 4", tr.Len())
	}
	got := tr.Match("a/b", nil)
	slices.Sort(got)
	if want := []int{1, 1, 1, 2}; !slices.Equal(got, want) {
		t.Errorf("Match = %v, want %v", got, want)
	}
	// Values under one filter come back in insertion order.
	var exact Trie[int]
	for _, v := range []int{3, 1, 2} {
		exact.Add("x", v)
	}
	if got := exact.Match("x", nil); !slices.Equal(got, []int{3, 1, 2}) {
		t.Errorf("Match order = %v, want [3 1 2]", got)
	}
}

func TestRemove(t *testing.T) {
	t.Parallel()
	var tr Trie[int]
	entries := []struct {
		filter string
		v      int
	}{
		{"a/b/c", 1}, {"a/b", 1}, {"a/b", 2}, {"a/+/c", 1}, {"a/#", 1}, {"#", 3}, {"+", 3},
		{"+/+", 4}, {"a//b", 5}, {"/", 6}, {"$SYS/#", 7}, {"$share/g/x/y", 8},
	}
	for _, e := range entries {
		tr.Add(e.filter, e.v)
	}
	if tr.Len() != len(entries) {
		t.Fatalf("Len = %d, want %d", tr.Len(), len(entries))
	}
	nodes := tr.root.nodeCount()

	misses := []struct {
		filter string
		v      int
	}{
		{"a/b", 9},        // wrong value
		{"a", 1},          // a node on the path, but no entry ends there
		{"a/b/c/d", 1},    // longer than any filter
		{"q", 1},          // no such level
		{"a/+", 1},        // wildcard child that does not exist at this level
		{"+/#", 3},        // missing '#' below an existing '+'
		{"x/y/#", 8},      // missing '#' below an existing literal
		{"$share/h/x", 8}, // inner filter absent
	}
	for _, m := range misses {
		if tr.Remove(m.filter, m.v) {
			t.Errorf("Remove(%q, %d) = true, want false", m.filter, m.v)
		}
	}
	if tr.Len() != len(entries) || tr.root.nodeCount() != nodes {
		t.Fatalf("failed removals changed the trie: Len %d nodes %d, want %d and %d",
			tr.Len(), tr.root.nodeCount(), len(entries), nodes)
	}

	// Removing the leaf "a/b/c" must keep "a/b" and the '+' branch that shares "a".
	if !tr.Remove("a/b/c", 1) {
		t.Fatal(`Remove("a/b/c", 1) = false`)
	}
	if got := tr.root.nodeCount(); got != nodes-1 {
		t.Errorf("nodes after removing a leaf = %d, want %d", got, nodes-1)
	}
	if got := tr.Match("a/b/c", nil); !slices.Equal(sorted(got), []int{1, 1, 3}) {
		t.Errorf(`Match("a/b/c") = %v, want [1 1 3]`, got)
	}
	if tr.Remove("a/b/c", 1) {
		t.Error(`second Remove("a/b/c", 1) = true`)
	}
	// Removing one of two values keeps the node.
	if !tr.Remove("a/b", 2) || tr.root.nodeCount() != nodes-1 {
		t.Errorf(`Remove("a/b", 2): nodes = %d, want %d`, tr.root.nodeCount(), nodes-1)
	}
	// The shared form removes the entry stored under the inner filter.
	if !tr.Remove("x/y", 8) {
		t.Error(`Remove("x/y", 8) of an entry added as "$share/g/x/y" = false`)
	}

	for _, e := range entries {
		switch {
		case e.filter == "a/b/c", e.filter == "a/b" && e.v == 2, e.v == 8:
			continue
		}
		if !tr.Remove(e.filter, e.v) {
			t.Errorf("Remove(%q, %d) = false", e.filter, e.v)
		}
	}
	if tr.Len() != 0 {
		t.Errorf("Len after removing everything = %d", tr.Len())
	}
	if n := tr.root.nodeCount(); n != 1 {
		t.Errorf("nodes after removing everything = %d, want 1 (the root)", n)
	}
	if !tr.root.empty() || tr.root.children != nil {
		t.Errorf("root not back to its zero state: %+v", tr.root)
	}
}

// TestMatchRandom compares Match with a level-by-level reference over random filters and
// topics drawn from a small alphabet, so collisions, wildcards, empty levels and '$' are
// common. It checks again after removing a random half, and that removing the rest leaves
// an empty trie.
func TestMatchRandom(t *testing.T) {
	t.Parallel()
	for seed := range uint64(8) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 0x7465726e))
			var tr Trie[int]
			var live []entry
			for i := range 300 {
				e := entry{randomFilter(rng), i}
				if len(live) > 0 && rng.IntN(10) == 0 {
					e = live[rng.IntN(len(live))] // re-add: must not be stored twice
				} else {
					live = append(live, e)
				}
				tr.Add(e.filter, e.v)
			}
			checkRandom(t, rng, &tr, live)

			rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
			half := len(live) / 2
			for _, e := range live[:half] {
				if !tr.Remove(e.filter, e.v) {
					t.Fatalf("Remove(%q, %d) = false", e.filter, e.v)
				}
				if tr.Remove(e.filter, e.v) {
					t.Fatalf("second Remove(%q, %d) = true", e.filter, e.v)
				}
			}
			live = live[half:]
			checkRandom(t, rng, &tr, live)

			for _, e := range live {
				if !tr.Remove(e.filter, e.v) {
					t.Fatalf("Remove(%q, %d) = false", e.filter, e.v)
				}
			}
			if tr.Len() != 0 || tr.root.nodeCount() != 1 {
				t.Fatalf("after removing everything: Len %d, nodes %d", tr.Len(), tr.root.nodeCount())
			}
		})
	}
}

type entry struct {
	filter string
	v      int
}

func checkRandom(t *testing.T, rng *rand.Rand, tr *Trie[int], live []entry) {
	t.Helper()
	if tr.Len() != len(live) {
		t.Fatalf("Len = %d, want %d", tr.Len(), len(live))
	}
	var got, want []int
	for range 500 {
		topic := randomTopic(rng)
		got = tr.Match(topic, got[:0])
		want = want[:0]
		for _, e := range live {
			if refMatch(e.filter, topic) {
				want = append(want, e.v)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("Match(%q) = %v, want %v", topic, got, want)
		}
	}
}

var (
	topicLevels  = []string{"a", "b", "", "$", "$a"}
	filterLevels = []string{"a", "b", "", "$", "$a", "+", "+"}
)

func randomFilter(rng *rand.Rand) string {
	n := 1 + rng.IntN(4)
	levels := make([]string, n)
	for i := range levels {
		levels[i] = filterLevels[rng.IntN(len(filterLevels))]
	}
	if rng.IntN(4) == 0 {
		levels[n-1] = "#"
	}
	f := strings.Join(levels, "/")
	if rng.IntN(8) == 0 {
		f = "$share/" + []string{"g", "h"}[rng.IntN(2)] + "/" + f
	}
	return f
}

func randomTopic(rng *rand.Rand) string {
	levels := make([]string, 1+rng.IntN(5))
	for i := range levels {
		levels[i] = topicLevels[rng.IntN(len(topicLevels))]
	}
	return strings.Join(levels, "/")
}

// refMatch is the plain reading of section 4.7, one level at a time.
func refMatch(filter, topic string) bool {
	if parts := strings.SplitN(filter, "/", 3); len(parts) == 3 && parts[0] == "$share" {
		filter = parts[2]
	}
	f := strings.Split(filter, "/")
	tp := strings.Split(topic, "/")
	if strings.HasPrefix(topic, "$") && (f[0] == "+" || f[0] == "#") {
		return false
	}
	for i, level := range f {
		if level == "#" {
			return true // every earlier level matched, so the topic has at least i levels
		}
		if i >= len(tp) || (level != "+" && level != tp[i]) {
			return false
		}
	}
	return len(f) == len(tp)
}

func sorted(s []int) []int {
	slices.Sort(s)
	return s
}

func TestMatchDoesNotAllocate(t *testing.T) {
	tr, topics := benchTrie()
	dst := make([]int, 0, 64)
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		dst = tr.Match(topics[i%len(topics)], dst[:0])
		i++
	})
	if allocs != 0 {
		t.Errorf("Match allocates %v times per call, want 0", allocs)
	}
}

// benchTrie returns a trie of 1,000 filters, half exact and half with wildcards in
// various positions, and topics that each match several of them.
func benchTrie() (*Trie[int], []string) {
	tr := new(Trie[int])
	for i := range 1000 {
		site, dev := i%20, i
		var f string
		switch i % 8 {
		case 0, 1, 2, 3:
			f = fmt.Sprintf("site%d/dev%d/temp", site, dev)
		case 4:
			f = fmt.Sprintf("site%d/+/temp", site)
		case 5:
			f = fmt.Sprintf("site%d/dev%d/#", site, dev)
		case 6:
			f = fmt.Sprintf("+/dev%d/+", dev)
		case 7:
			f = fmt.Sprintf("$share/g%d/site%d/#", i%3, site)
		}
		tr.Add(f, i)
	}
	tr.Add("#", -1)
	var topics []string
	for i := range 256 {
		topics = append(topics, fmt.Sprintf("site%d/dev%d/temp", i%20, (i*37)%1000))
	}
	return tr, topics
}

func BenchmarkMatch(b *testing.B) {
	tr, topics := benchTrie()
	dst := make([]int, 0, 64)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		dst = tr.Match(topics[i%len(topics)], dst[:0])
		i++
	}
}
