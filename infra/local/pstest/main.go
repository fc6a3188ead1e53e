// pstest serves Google's in-memory Pub/Sub fake on a fixed address, so the
// services can reach it through PUBSUB_EMULATOR_HOST like the real emulator.
//
// Built in GOPATH mode from the distribution's packages (golang-go,
// golang-google-cloud-dev): GO111MODULE=off GOPATH=/usr/share/gocode go build.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/pstest"
	emptypb "github.com/golang/protobuf/ptypes/empty"
	pb "google.golang.org/genproto/googleapis/pubsub/v1"
	"google.golang.org/grpc"
)

// subscriber gives subscriptions created without an ack deadline the real
// service's 10 s default; this pstest version rejects 0 instead.
type subscriber struct {
	*pstest.GServer
	fake *pstest.Server
	flow *flowControl
}

func (s subscriber) CreateSubscription(ctx context.Context, sub *pb.Subscription) (*pb.Subscription, error) {
	if sub.AckDeadlineSeconds == 0 {
		sub.AckDeadlineSeconds = 10
	}
	return s.GServer.CreateSubscription(ctx, sub)
}

// ModifyAckDeadline leaves out ack IDs this fake never handed out, as the real
// service ignores unknown ones: a client still extending the leases of messages
// it got before an emulator restart would otherwise make this pstest version
// dereference a missing message and panic, taking the whole emulator down.
func (s subscriber) ModifyAckDeadline(ctx context.Context, req *pb.ModifyAckDeadlineRequest) (*emptypb.Empty, error) {
	known := make([]string, 0, len(req.AckIds))
	for _, id := range req.AckIds {
		if s.fake.Message(id) != nil {
			known = append(known, id)
		}
	}
	req.AckIds = known
	seconds := make([]int32, len(known))
	for i := range seconds {
		seconds[i] = req.AckDeadlineSeconds
	}
	s.flow.leased(req.Subscription, known, seconds)
	return s.GServer.ModifyAckDeadline(ctx, req)
}

func (s subscriber) Acknowledge(ctx context.Context, req *pb.AcknowledgeRequest) (*emptypb.Empty, error) {
	s.flow.acknowledged(req.Subscription, req.AckIds)
	return s.GServer.Acknowledge(ctx, req)
}

// StreamingPull honours the client's max_outstanding_messages (flow.go).
func (s subscriber) StreamingPull(stream pb.Subscriber_StreamingPullServer) error {
	return s.GServer.StreamingPull(s.flow.stream(stream, s.lease))
}

func (s subscriber) lease(ctx context.Context, subscription string, ackIDs []string, seconds int32) {
	if subscription == "" || len(ackIDs) == 0 {
		return
	}
	req := &pb.ModifyAckDeadlineRequest{Subscription: subscription, AckIds: ackIDs, AckDeadlineSeconds: seconds}
	if _, err := s.ModifyAckDeadline(ctx, req); err != nil {
		log.Printf("pstest: holding %d message(s) on %s: %v", len(ackIDs), subscription, err)
	}
}

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.String("port", envOr("PSTEST_PORT", "8085"), "TCP port to listen on")
	flag.Parse()

	// NewServer also listens on a random loopback port of its own; only the
	// state behind GServer is used, served on the chosen address below.
	fake := pstest.NewServer()
	listener, err := net.Listen("tcp", net.JoinHostPort(*host, *port))
	if err != nil {
		log.Fatalf("pstest: %v", err)
	}
	server := grpc.NewServer()
	pb.RegisterPublisherServer(server, &fake.GServer)
	pb.RegisterSubscriberServer(server, subscriber{GServer: &fake.GServer, fake: fake, flow: newFlowControl()})

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		// Stop, not GracefulStop: streaming pulls never finish on their own.
		server.Stop()
	}()

	log.Printf("pstest: Pub/Sub fake listening on %s", listener.Addr())
	if err := server.Serve(listener); err != nil {
		log.Fatalf("pstest: %v", err)
	}
}

func envOr(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}
