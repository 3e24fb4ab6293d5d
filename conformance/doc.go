// Package conformance holds Tern's end-to-end suites against real brokers: crash tests with
// kill -9, and (growing) conformance and fault suites. It is a module of its own so its
// dependencies stay out of the library.
package conformance
