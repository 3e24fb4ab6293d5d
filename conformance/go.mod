module github.com/ternmq/tern/conformance

go 1.26

require github.com/ternmq/tern v0.0.0

replace github.com/ternmq/tern => ../
