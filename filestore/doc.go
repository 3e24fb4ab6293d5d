// Package filestore is a durable tern.Store: a client's in-flight QoS 1 and 2 state
// (outbound publishes, QoS 2 exchanges past PUBREC, inbound QoS 2 messages not yet
// released) kept in append-only files, so a client restarted after kill -9 or a power
// failure resumes its session where it stopped.
//
//	store, err := filestore.Open("/var/lib/myapp/session", filestore.WithTTL(24*time.Hour))
//	if err != nil { ... }
//	client, err := tern.New(tern.WithBroker(url), tern.WithStore(store))
//
// # Guarantees
//
// The Store keeps the write-ahead contract of tern.Store:
//
//   - Put (RecordPublish, RecordReleased, RecordInbound) returns once the record is as
//     durable as the sync policy says; with SyncEveryWrite (the default) after an fsync
//     covering it. Many goroutines calling Put at once share one write and one fsync
//     (group commit).
//   - PutAsync (tern.AsyncStore) adds the same record and returns at once; its done
//     callback reports, in call order, when the record is as durable as Put would have made
//     it. The client uses it for inbound QoS 2 receipts and for the RecordReleased of an
//     outbound QoS 2 message on PUBREC, so neither its read loop nor the acknowledging
//     goroutine waits for one fsync per message; PUBREC still waits for the receipt, and
//     PUBREL for the RecordReleased.
//   - A RecordReleased replacing a RecordPublish keeps the publish's Seq and Time.
//   - Delete appends a tombstone and returns without touching the disk; the log's own
//     goroutine writes it at once (it survives a crash of the process moments later) and
//     the next fsync makes it durable. A deletion lost to a power failure only brings back
//     a record the contract says is harmless to resend.
//   - Reset drops the inbound and RecordReleased records and is durable like Put;
//     RecordPublish records stay.
//   - Load returns the live records, outbound in Seq order, then inbound in Seq order.
//   - With WithTTL(d), records whose Time is older than d are purged at Open and
//     periodically, so a session never resumed does not pile up forever.
//   - One Store per directory: a LOCK file held with flock refuses a second Open with
//     ErrLocked, and is released by the kernel if the process dies.
//   - After a failed write or fsync every call fails until the store is closed and opened
//     again: the state of the page cache is unknown after a failed fsync, and nothing after
//     it may be reported durable.
//
// Memory holds one small index entry per live record (kind, id, seq, time, position in
// the log); packets are read back from disk by Load.
//
// # Compaction
//
// Every Put, Delete and Reset appends, so the log grows with traffic while the live state
// stays the size of the in-flight window. When the dead bytes exceed both the live bytes
// and the segment size, the store's goroutine seals the active segment and rewrites the
// live records of every sealed segment into a file written as NNN.seg.tmp, fsynced,
// renamed over the newest sealed segment, with the directory fsynced; then the older
// segments are deleted. The rewritten segment starts with a checkpoint record, so if a
// crash comes between the rename and the deletions, Open deletes the older segments
// itself; a crash before the rename leaves a .tmp file that Open discards.
//
// # Sync policies
//
//   - SyncEveryWrite: durable on return; survives power loss. The default.
//   - SyncInterval(d): Put returns once the record is written to the operating system; a
//     background goroutine fsyncs every d. Survives a crash of the process; a crash of the
//     machine loses at most about d of records.
//   - SyncNone: written to the operating system only. Close still syncs.
//
// # On-disk format
//
// The directory holds LOCK and segment files named by a 20-digit ordinal
// (00000000000000000001.seg, ...), each a run of records:
//
//	[len u32][crc32c u32][version u8][type u8][payload]
//
// All integers are little endian. len counts the bytes after the crc; the crc is CRC-32C
// (Castagnoli) of version, type and payload. This package writes version 1:
//
//	type 1, put:    kind u8 (1 publish, 2 released, 3 inbound), packet id u16, seq u64,
//	                time i64 (Unix ns), the encoded packet to the end of the record
//	type 2, delete: kind u8, packet id u16 (kinds 1 and 2 share one id space)
//	type 3, reset:  empty
//	type 0xFF:      checkpoint, written by the log at the start of a compacted segment
//
// Replaying the records in order gives the live state. On Open a torn tail of the last
// segment is truncated; a damaged record anywhere else is reported to the
// WithCorruptionHandler function and skipped, reading resumes at the next offset where a
// valid record parses; an empty segment file is removed; a gap in the numbering is
// reported. Every intact record is kept, and Open never loops on damaged data.
//
// # Migrating the format
//
// Every record carries its version. A future version 2 would be introduced like this: the
// new code reads versions 1 and 2 and writes only 2, and compaction re-encodes every live
// record it rewrites (it already decodes and encodes rather than copying), so old records
// disappear as the log is compacted. Code that meets a version newer than it knows refuses
// to Open with ErrVersion instead of misreading state, which makes a downgrade fail
// loudly. A change to the framing itself (length, checksum) would need a new file suffix,
// converted at Open.
package filestore
