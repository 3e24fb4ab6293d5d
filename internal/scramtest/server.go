// Package scramtest is the server side of SCRAM-SHA-256, for tests of the client: it checks a
// client's proof and produces the server's signature.
package scramtest

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// Server knows one user's password.
type Server struct {
	User, Password string
	Salt           []byte
	Iterations     int

	clientFirstBare, serverFirst, nonce string
}

// First answers the client-first message with the server-first message.
func (s *Server) First(clientFirst string) (string, error) {
	bare, ok := strings.CutPrefix(clientFirst, "n,,")
	if !ok {
		return "", errors.New("scramtest: no gs2 header")
	}
	attrs := fields(bare)
	if attrs["n"] != strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s.User) {
		return "", errors.New("scramtest: unknown user")
	}
	s.clientFirstBare = bare
	s.nonce = attrs["r"] + "server-nonce"
	s.serverFirst = "r=" + s.nonce + ",s=" + base64.StdEncoding.EncodeToString(s.Salt) + ",i=" + strconv.Itoa(s.Iterations)
	return s.serverFirst, nil
}

// Final checks the client-final message and returns the server-final message.
func (s *Server) Final(clientFinal string) (string, error) {
	i := strings.LastIndex(clientFinal, ",p=")
	if i < 0 {
		return "", errors.New("scramtest: no proof")
	}
	withoutProof := clientFinal[:i]
	if fields(withoutProof)["r"] != s.nonce {
		return "", errors.New("scramtest: nonce mismatch")
	}
	proof, err := base64.StdEncoding.DecodeString(clientFinal[i+3:])
	if err != nil {
		return "", err
	}
	salted, _ := pbkdf2.Key(sha256.New, s.Password, s.Salt, s.Iterations, sha256.Size)
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	auth := s.clientFirstBare + "," + s.serverFirst + "," + withoutProof
	sig := mac(stored[:], auth)
	if len(proof) != len(sig) {
		return "", errors.New("scramtest: bad proof length")
	}
	for j := range sig {
		sig[j] ^= proof[j]
	}
	if got := sha256.Sum256(sig); !hmac.Equal(got[:], stored[:]) {
		return "", errors.New("scramtest: wrong password")
	}
	return "v=" + base64.StdEncoding.EncodeToString(mac(mac(salted, "Server Key"), auth)), nil
}

func mac(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

func fields(msg string) map[string]string {
	out := map[string]string{}
	for _, p := range strings.Split(msg, ",") {
		k, v, _ := strings.Cut(p, "=")
		out[k] = v
	}
	return out
}
