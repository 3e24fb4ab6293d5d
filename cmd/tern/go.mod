module github.com/ternmq/tern/cmd/tern

go 1.26

require (
	github.com/goccy/go-yaml v1.19.2
	github.com/mochi-mqtt/server/v2 v2.7.9
	github.com/ternmq/tern v0.0.0
	github.com/vmihailenco/msgpack/v5 v5.4.1
)

require (
	github.com/gorilla/websocket v1.5.0 // indirect
	github.com/rs/xid v1.4.0 // indirect
	github.com/vmihailenco/tagparser/v2 v2.0.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)

replace github.com/ternmq/tern => ../..
