module recycler.dev/go-boot-wrapper

go 1.25.0

require (
	github.com/apache/beam/sdks/v2 v2.70.0
	golang.org/x/sys v0.38.0
	google.golang.org/grpc v1.77.0
	google.golang.org/protobuf v1.36.10
)

require (
	golang.org/x/net v0.47.0 // indirect
	golang.org/x/text v0.31.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20251029180050-ab9386a59fda // indirect
)
