package events

// Disconnect is a close the server sends: the WebSocket close code and its
// reason, as one value. Reason doubles as the bounded label of the closes
// metric.
type Disconnect struct {
	Code   int
	Reason string
}

// The closes of the contract.
var (
	Shutdown      = Disconnect{1001, "server shutting down"}
	InvalidUTF8   = Disconnect{1007, "invalid UTF-8"}
	MessageTooBig = Disconnect{1009, "message too big"}
	TokenExpired  = Disconnect{4001, "token expired"}
	AuthTimeout   = Disconnect{4002, "authentication timeout"}
	TokenFailures = Disconnect{4003, "too many invalid tokens"}
	UserGone      = Disconnect{4004, "user not exists"}
	SlowConsumer  = Disconnect{4008, "slow consumer"}
)

// Disconnects lists every close of the contract.
var Disconnects = []Disconnect{Shutdown, InvalidUTF8, MessageTooBig, TokenExpired, AuthTimeout, TokenFailures, UserGone, SlowConsumer}
