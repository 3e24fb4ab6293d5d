module github.com/ternmq/tern/ws

go 1.26

require (
	github.com/coder/websocket v1.8.15
	github.com/mochi-mqtt/server/v2 v2.7.9
	github.com/ternmq/tern v0.0.0
)

require (
	github.com/gorilla/websocket v1.5.0 // indirect
	github.com/rs/xid v1.4.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)

replace github.com/ternmq/tern => ../
