package scram

import (
	"context"
	"strings"
	"testing"

	"github.com/ternmq/tern/internal/scramtest"
)

func exchange(t *testing.T, c *Client, srv *scramtest.Server) error {
	t.Helper()
	ctx := context.Background()
	first, err := c.Start(ctx)
	if err != nil {
		return err
	}
	sf, err := srv.First(string(first))
	if err != nil {
		return err
	}
	final, err := c.Continue(ctx, []byte(sf))
	if err != nil {
		return err
	}
	v, err := srv.Final(string(final))
	if err != nil {
		return err
	}
	return c.Done(ctx, []byte(v))
}

func TestExchange(t *testing.T) {
	srv := &scramtest.Server{User: "us,er=1", Password: "pencil", Salt: []byte("salty"), Iterations: 4096}
	c := New("us,er=1", "pencil")
	if err := exchange(t, c, srv); err != nil {
		t.Fatal(err)
	}
	// A second exchange on the same client starts afresh.
	if err := exchange(t, c, srv); err != nil {
		t.Fatal(err)
	}
}

func TestWrongPassword(t *testing.T) {
	srv := &scramtest.Server{User: "u", Password: "right", Salt: []byte("s"), Iterations: 4096}
	if err := exchange(t, New("u", "wrong"), srv); err == nil || !strings.Contains(err.Error(), "wrong password") {
		t.Fatalf("got %v, want the server to refuse the proof", err)
	}
}

// The client refuses a server that cannot prove it knows the password.
func TestForgedServerSignature(t *testing.T) {
	ctx := context.Background()
	srv := &scramtest.Server{User: "u", Password: "p", Salt: []byte("s"), Iterations: 4096}
	c := New("u", "p")
	first, _ := c.Start(ctx)
	sf, _ := srv.First(string(first))
	if _, err := c.Continue(ctx, []byte(sf)); err != nil {
		t.Fatal(err)
	}
	if err := c.Done(ctx, []byte("v=AAAA")); err == nil {
		t.Fatal("accepted a forged server signature")
	}
}

func TestRejectsWeakOrForeignChallenges(t *testing.T) {
	ctx := context.Background()
	cases := map[string]string{
		"few iterations": "r=%sX,s=c2FsdA==,i=1",
		"foreign nonce":  "r=other,s=c2FsdA==,i=4096",
		"same nonce":     "r=%s,s=c2FsdA==,i=4096",
		"bad salt":       "r=%sX,s=!!,i=4096",
		"malformed":      "garbage",
	}
	for name, tmpl := range cases {
		c := New("u", "p")
		c.nonce = func() string { return "fixed" }
		c.Start(ctx)
		msg := strings.ReplaceAll(tmpl, "%s", "fixed")
		if _, err := c.Continue(ctx, []byte(msg)); err == nil {
			t.Errorf("%s: accepted %q", name, msg)
		}
	}
	if err := New("u", "p").Done(ctx, []byte("v=x")); err == nil {
		t.Error("Done before the exchange accepted")
	}
}
