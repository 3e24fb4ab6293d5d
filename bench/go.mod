module github.com/ternmq/tern/bench

go 1.26

require (
	github.com/eclipse/paho.golang v0.23.0
	github.com/ternmq/tern v0.0.0
)

replace github.com/ternmq/tern => ../
