module github.com/bpmux/bp/bench

go 1.26.8

require (
	github.com/bpmux/bp v0.0.0-00010101000000-000000000000
	github.com/hashicorp/yamux v0.1.2
	github.com/quic-go/quic-go v0.65.0
	github.com/xtaci/smux v1.5.56
	golang.org/x/net v0.62.0
)

require (
	github.com/klauspost/compress v1.20.1 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)

replace github.com/bpmux/bp => ../
