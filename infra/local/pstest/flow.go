package main

// Server-side flow control for streaming pulls, which this pstest version leaves
// out: the real service stops sending on a stream whose client already holds as
// many unacknowledged messages as it asked for (max_outstanding_messages), so a
// burst is shared between subscribers instead of all going to the first stream.
//
// The fake hands a message to a stream only while that stream's send loop waits
// for one. Holding Send back while the client is at its limit therefore makes the
// fake offer the following messages to the other streams. The one message held in
// that Send keeps its lease here until it goes out, and is released to the others
// at once if the stream ends first.

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/golang/protobuf/proto"
	pb "google.golang.org/genproto/googleapis/pubsub/v1"
)

const (
	// StreamingPullRequest field 7, max_outstanding_messages, which this
	// version's generated code does not know: it arrives among the unknown bytes.
	maxOutstandingMessagesTag = 7<<3 | proto.WireVarint
	// A held message's lease is renewed for this long, this often.
	heldLease        = 60 * time.Second
	heldLeaseRenewal = 20 * time.Second
	// The real service's stream ack deadline until the client sets its own.
	defaultStreamAckDeadline = 10 * time.Second
)

// flowControl tracks, for every open stream, the messages its client holds.
// Acks and lease changes arrive on the stream or as unary calls; both land here.
type flowControl struct {
	mu     sync.Mutex
	owners map[ackKey]*flowStream // the stream each message was sent on
}

// ackKey names a message in one subscription: this fake's ack IDs are its message
// IDs, the same in every subscription of a topic.
type ackKey struct {
	subscription string
	ackID        string
}

func newFlowControl() *flowControl {
	return &flowControl{owners: map[ackKey]*flowStream{}}
}

type flowStream struct {
	pb.Subscriber_StreamingPullServer
	flow  *flowControl
	lease func(ctx context.Context, subscription string, ackIDs []string, seconds int32)
	wake  chan struct{}

	// Guarded by flow.mu.
	subscription string
	limit        int64
	ackDeadline  time.Duration
	outstanding  map[string]time.Time // ack ID → when its lease runs out
	closed       bool
}

func (fc *flowControl) stream(
	inner pb.Subscriber_StreamingPullServer,
	lease func(ctx context.Context, subscription string, ackIDs []string, seconds int32),
) *flowStream {
	return &flowStream{
		Subscriber_StreamingPullServer: inner,
		flow:                           fc,
		lease:                          lease,
		wake:                           make(chan struct{}, 1),
		ackDeadline:                    defaultStreamAckDeadline,
		outstanding:                    map[string]time.Time{},
	}
}

// acknowledged drops acked messages from their streams' counts.
func (fc *flowControl) acknowledged(subscription string, ackIDs []string) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for _, id := range ackIDs {
		fc.releaseLocked(ackKey{subscription, id})
	}
}

// leased records new lease ends; a zero deadline is a nack and frees the slot.
func (fc *flowControl) leased(subscription string, ackIDs []string, seconds []int32) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	now := time.Now()
	for i, id := range ackIDs {
		key := ackKey{subscription, id}
		owner := fc.owners[key]
		if owner == nil || i >= len(seconds) {
			continue
		}
		if seconds[i] <= 0 {
			fc.releaseLocked(key)
			continue
		}
		owner.outstanding[id] = now.Add(time.Duration(seconds[i]) * time.Second)
	}
}

func (fc *flowControl) releaseLocked(key ackKey) {
	owner := fc.owners[key]
	if owner == nil {
		return
	}
	delete(fc.owners, key)
	delete(owner.outstanding, key.ackID)
	owner.signal()
}

// forgetLocked drops a closed stream's messages: the fake redelivers them once
// their leases run out, as the real service does.
func (fc *flowControl) forgetLocked(st *flowStream) {
	for id := range st.outstanding {
		if key := (ackKey{st.subscription, id}); fc.owners[key] == st {
			delete(fc.owners, key)
		}
	}
	st.outstanding = map[string]time.Time{}
}

func (st *flowStream) signal() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

func (st *flowStream) Recv() (*pb.StreamingPullRequest, error) {
	req, err := st.Subscriber_StreamingPullServer.Recv()
	if err != nil {
		st.flow.mu.Lock()
		st.closed = true
		st.flow.forgetLocked(st)
		st.flow.mu.Unlock()
		st.signal()
		return req, err
	}
	st.flow.mu.Lock()
	if req.Subscription != "" {
		st.subscription = req.Subscription
	}
	if limit, ok := maxOutstandingMessages(req.XXX_unrecognized); ok {
		st.limit = limit
	}
	if req.StreamAckDeadlineSeconds > 0 {
		st.ackDeadline = time.Duration(req.StreamAckDeadlineSeconds) * time.Second
	}
	subscription := st.subscription
	st.flow.mu.Unlock()
	st.flow.acknowledged(subscription, req.AckIds)
	st.flow.leased(subscription, req.ModifyDeadlineAckIds, req.ModifyDeadlineSeconds)
	return req, nil
}

// Send waits while the client holds as many messages as it asked for.
func (st *flowStream) Send(res *pb.StreamingPullResponse) error {
	ids := make([]string, 0, len(res.ReceivedMessages))
	for _, m := range res.ReceivedMessages {
		ids = append(ids, m.AckId)
	}
	ctx := st.Context()
	held := false
	for {
		st.flow.mu.Lock()
		if st.closed || ctx.Err() != nil {
			subscription := st.subscription
			st.flow.mu.Unlock()
			if held {
				// Back to the other streams now, not when the lease runs out.
				st.lease(context.Background(), subscription, ids, 0)
			}
			return io.EOF
		}
		if st.roomLocked(time.Now()) {
			expires := time.Now().Add(st.ackDeadline)
			for _, id := range ids {
				st.outstanding[id] = expires
				st.flow.owners[ackKey{st.subscription, id}] = st
			}
			st.flow.mu.Unlock()
			return st.Subscriber_StreamingPullServer.Send(res)
		}
		subscription := st.subscription
		st.flow.mu.Unlock()
		st.lease(ctx, subscription, ids, int32(heldLease/time.Second))
		held = true
		select {
		case <-st.wake:
		case <-ctx.Done():
		case <-time.After(heldLeaseRenewal):
		}
	}
}

// roomLocked: whether the client may get another message. Messages whose leases
// ran out without a word from the client no longer count.
func (st *flowStream) roomLocked(now time.Time) bool {
	for id, expires := range st.outstanding {
		if now.After(expires) {
			delete(st.outstanding, id)
			if key := (ackKey{st.subscription, id}); st.flow.owners[key] == st {
				delete(st.flow.owners, key)
			}
		}
	}
	return st.limit <= 0 || int64(len(st.outstanding)) < st.limit
}

// maxOutstandingMessages reads field 7 from a request's unknown bytes.
func maxOutstandingMessages(unknown []byte) (int64, bool) {
	buffer := proto.NewBuffer(unknown)
	for {
		tag, err := buffer.DecodeVarint()
		if err != nil {
			return 0, false
		}
		if tag == maxOutstandingMessagesTag {
			value, err := buffer.DecodeVarint()
			return int64(value), err == nil
		}
		if err := skipField(buffer, tag); err != nil {
			return 0, false
		}
	}
}

func skipField(buffer *proto.Buffer, tag uint64) error {
	var err error
	switch tag & 7 {
	case proto.WireVarint:
		_, err = buffer.DecodeVarint()
	case proto.WireFixed64:
		_, err = buffer.DecodeFixed64()
	case proto.WireBytes:
		_, err = buffer.DecodeRawBytes(false)
	case proto.WireFixed32:
		_, err = buffer.DecodeFixed32()
	default:
		err = io.ErrUnexpectedEOF
	}
	return err
}
