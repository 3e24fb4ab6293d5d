//go:build !unix

package tern

import "net"

// newTryWriter returns nil: non-blocking socket writes (writer_unix.go) exist on Unix only;
// elsewhere every write goes through the writer's loop.
func newTryWriter(net.Conn) tryWriter { return nil }
