//go:build race

package main

// raceBuild: the race detector makes sync.Pool drop items on purpose, so a pooled buffer is
// allocated again now and then and allocation counts run higher under it.
const raceBuild = true
