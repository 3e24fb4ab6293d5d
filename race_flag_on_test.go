//go:build race

package tern

// raceBuild: the race detector makes sync.Pool drop items on purpose, so allocation counts
// mean nothing under it.
const raceBuild = true
