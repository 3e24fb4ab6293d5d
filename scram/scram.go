// Package scram is a SCRAM-SHA-256 client (RFC 5802, RFC 7677) for Tern's enhanced
// authentication: pass New(user, password) to tern.WithAuthenticator. The client proves it
// knows the password without sending it, and checks the server's proof in return.
//
// User names are escaped as the RFC requires (',' and '='); they are not normalised with
// SASLprep, so use names and passwords the server stores the same way (ASCII is safe).
package scram

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Method is the MQTT Authentication Method name.
const Method = "SCRAM-SHA-256"

// MinIterations is the smallest iteration count accepted from a server; fewer would make the
// salted password cheap to guess.
const MinIterations = 4096

// Client is one SCRAM-SHA-256 identity. It implements tern.Authenticator; one exchange runs
// at a time (Start begins a new one).
type Client struct {
	user, password string
	nonce          func() string // replaceable in tests

	clientNonce     string
	clientFirstBare string
	serverSignature []byte
	step            int
}

// New returns a client for user and password.
func New(user, password string) *Client {
	return &Client{user: user, password: password, nonce: randomNonce}
}

func randomNonce() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawStdEncoding.EncodeToString(b)
}

// Method implements tern.Authenticator.
func (c *Client) Method() string { return Method }

// Start implements tern.Authenticator: it returns the client-first message.
func (c *Client) Start(context.Context) ([]byte, error) {
	c.clientNonce = c.nonce()
	c.clientFirstBare = "n=" + escape(c.user) + ",r=" + c.clientNonce
	c.serverSignature = nil
	c.step = 1
	return []byte("n,," + c.clientFirstBare), nil
}

// Continue implements tern.Authenticator: it answers the server-first message with the
// client-final message carrying the proof.
func (c *Client) Continue(_ context.Context, serverFirst []byte) ([]byte, error) {
	if c.step != 1 {
		return nil, errors.New("scram: unexpected challenge")
	}
	c.step = 2
	attrs, err := parse(string(serverFirst))
	if err != nil {
		return nil, err
	}
	nonce, salt64, iter := attrs["r"], attrs["s"], attrs["i"]
	if !strings.HasPrefix(nonce, c.clientNonce) || len(nonce) == len(c.clientNonce) {
		return nil, errors.New("scram: server nonce does not extend the client nonce")
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil || len(salt) == 0 {
		return nil, errors.New("scram: bad salt")
	}
	n, err := strconv.Atoi(iter)
	if err != nil || n < MinIterations {
		return nil, fmt.Errorf("scram: iteration count %q below %d", iter, MinIterations)
	}
	salted, err := pbkdf2.Key(sha256.New, c.password, salt, n, sha256.Size)
	if err != nil {
		return nil, err
	}
	clientKey := mac(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	withoutProof := "c=biws,r=" + nonce // biws is base64("n,,"): no channel binding
	authMessage := c.clientFirstBare + "," + string(serverFirst) + "," + withoutProof
	proof := mac(storedKey[:], authMessage)
	for i := range proof {
		proof[i] ^= clientKey[i]
	}
	c.serverSignature = mac(mac(salted, "Server Key"), authMessage)
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// Done implements tern.Authenticator: it checks the server-final message, proving the server
// knows the password too.
func (c *Client) Done(_ context.Context, serverFinal []byte) error {
	if c.step != 2 || c.serverSignature == nil {
		return errors.New("scram: server accepted before the exchange finished")
	}
	c.step = 0
	attrs, err := parse(string(serverFinal))
	if err != nil {
		return err
	}
	if e, ok := attrs["e"]; ok {
		return fmt.Errorf("scram: server error %q", e)
	}
	sig, err := base64.StdEncoding.DecodeString(attrs["v"])
	if err != nil || !hmac.Equal(sig, c.serverSignature) {
		return errors.New("scram: server signature does not verify")
	}
	return nil
}

func mac(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// escape encodes ',' and '=' in a user name (RFC 5802 §5.1).
func escape(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}

// parse splits "k=v,k=v" into a map; values may contain '='.
func parse(msg string) (map[string]string, error) {
	out := make(map[string]string)
	for _, part := range strings.Split(msg, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok || len(k) != 1 {
			return nil, fmt.Errorf("scram: malformed message %q", msg)
		}
		out[k] = v
	}
	return out, nil
}
