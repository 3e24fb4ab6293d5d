// Package filequeue is a durable tern.PublisherQueue: messages handed to a
// tern.QueuePublisher are stored in append-only files before Publish returns, and stay
// there until the drain acknowledges them, across broker outages, process crashes and
// restarts.
//
//	q, err := filequeue.Open("/var/lib/myapp/queue")
//	if err != nil { ... }
//	pub, err := tern.NewQueuePublisher(client, q, tern.WithQueueTTL(time.Hour))
//
// # Guarantees
//
//   - With SyncEveryWrite (the default), Enqueue returns only once an fsync covering the
//     entry has succeeded. Many goroutines enqueueing at once share one write and one fsync
//     (group commit), so throughput grows with concurrency instead of being one fsync per
//     message. EnqueueAsync (tern.QueuePublisher.PublishAsync) returns before the sync and
//     reports it later, so a single goroutine's entries share fsyncs as well.
//   - Sequence numbers are assigned by Enqueue, stored in the entry, and strictly increase
//     across restarts, even after a torn, cut or deleted tail: a reservation kept in the
//     manifest (a high-water mark, renewed every 2^19 numbers) says how far numbers may have
//     been handed out, and Open resumes above it. After a crash numbering jumps by at most
//     2^20; after Close it goes on without a gap. Read returns entries in sequence order.
//   - A segment file missing at the front or the end of the queue, or between others, is
//     reported at Open with the sequence numbers it held (WithCorruptionHandler; by default
//     a warning through slog). Segments removed because every entry in them was
//     acknowledged are recorded in the manifest first and never reported. Open still
//     succeeds: what survives is delivered.
//   - Stats().Depth counts entries whose Enqueue succeeded and that are not acknowledged;
//     an Enqueue that failed (a failed write or fsync) is not counted.
//   - Ack (and AckBatch, many at the cost of one write) writes an acknowledgement record
//     before returning (it survives a crash of the process) and is synced with the next
//     fsync; an acknowledgement lost to a power failure means the entry is delivered
//     again: at least once.
//   - Acknowledgements may come in any order. Memory holds a summary per segment file and
//     the acknowledgements above the oldest unacknowledged entry, never the entries: it
//     stays flat as the backlog grows. Read streams from disk through a cursor that stays
//     where the previous Read stopped.
//   - A segment file is deleted once it and every older one hold no unacknowledged entry
//     (the newest segment holding an entry is kept, so the highest sequence number is never
//     forgotten).
//   - One Queue per directory: a LOCK file held with flock refuses a second Open with
//     ErrLocked, in this process or another, and is released by the kernel if the process
//     dies.
//   - Expiry is not the queue's job: the QueuePublisher dead-letters expired messages (and
//     acknowledges them). Stats reports the enqueue time of the oldest unacknowledged entry.
//   - After a failed write or fsync the queue refuses every Enqueue and Ack until it is
//     closed and opened again: once fsync has failed the state of the page cache is unknown,
//     and nothing after it may be reported durable.
//
// # Sync policies
//
//   - SyncEveryWrite: durable on return; survives power loss. The default.
//   - SyncInterval(d): Enqueue returns once the entry is written to the operating system;
//     a background goroutine fsyncs every d. Survives a crash of the process; a crash of the
//     machine loses at most about d of entries.
//   - SyncNone: written to the operating system only; it decides when to flush. Close still
//     syncs.
//
// # On-disk format
//
// The directory holds LOCK, MANIFEST and segment files named by a 20-digit ordinal
// (00000000000000000001.seg, ...); subdirectories are left alone. A segment is a run of
// records:
//
//	[len u32][crc32c u32][version u8][type u8][payload]
//
// All integers are little endian. len counts the bytes after the crc; the crc is CRC-32C
// (Castagnoli) of version, type and payload. This package writes version 2 (the records of
// version 1, in a directory with a manifest) and reads 1 and 2; two types:
//
//	type 1, entry: seq u64, enqueue time i64 (Unix ns), qos u8, flags u8 (bit 0 retain),
//	               payload format u8, message expiry i64 (ns),
//	               topic, content type, response topic, correlation data (each uvarint
//	               length + bytes), user property count uvarint, each key and value
//	               (uvarint length + bytes), payload (uvarint length + bytes)
//	type 2, ack:   seq u64
//
// An acknowledgement is always in the same segment as its entry or a later one.
//
// MANIFEST is one record of the same framing (version 1, type 0xFE): first segment u64,
// last segment u64, then the queue's value: version u8 (1), reserved u64 (no sequence
// number above it was handed out), floor u64 (when segments were last removed, every entry
// up to it was acknowledged). It is replaced by writing MANIFEST.tmp, fsync, rename and
// directory fsync: when a segment is created, before segments are removed, when the
// reservation is renewed, at Open and at Close.
//
// Dead letters (messages a tern.QueuePublisher gave up on, with no dead-letter callback)
// are kept in a second log of the same framing in the subdirectory dead/, created by the
// first one, synced on every write whatever the sync policy:
//
//	type 3, dead:    set-aside time i64 (Unix ns), reason (uvarint length + bytes),
//	                 then the entry exactly as in a type 1 record
//	type 4, removed: seq u64
//
// DeadLetters reads them back and RemoveDeadLetter removes one; the files go once none is
// left. The publisher stores a dead letter before it acknowledges the entry, so a crash in
// between leaves it in both places (stored once per sequence number), never in neither.
//
// On Open every segment is read: a torn tail of the last segment (a record cut short by a
// crash) is truncated; a damaged record anywhere else is reported to the
// WithCorruptionHandler function and skipped, reading resumes at the next offset where a
// valid record parses; an empty segment file is removed; a gap in the numbering is
// reported, and so are segments missing at either end by the manifest, with the range of
// entries lost. Every intact record is kept, and Open never loops on damaged data.
//
// # Migrating the format
//
// Every record carries its version. Version 2 was introduced like this: the code reads
// versions 1 and 2 and writes only 2. Old segments are never rewritten; they drain and are
// deleted as their entries are acknowledged, so a directory converts itself; its manifest
// is created at the first Open, from the files found (nothing missing can be known before).
// Version 1 code refuses a version 2 directory, since it would delete segments without
// recording it in the manifest.
// Code that meets a version newer than it knows refuses to Open with ErrVersion instead of
// misreading entries, which makes a downgrade fail loudly. A change to the framing itself
// (length, checksum) would need a new file suffix, read by a converter at Open.
package filequeue
