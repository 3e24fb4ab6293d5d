package adapters

import (
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filequeue"
)

func init() {
	// With default options: group commit, the queue's documented default sync policy.
	OpenFileQueue = func(dir string) (tern.PublisherQueue, error) { return filequeue.Open(dir) }
}
