package api

import "time"

// Roles of a certificate trusted on the network API.
const (
	// RoleAdmin may do everything the unix socket may: it is root on the host.
	RoleAdmin = "admin"
	// RoleReadOnly may read the host's state (GET routes and the event
	// stream), never consoles, exec, guest files or anything that changes state.
	RoleReadOnly = "read-only"
	// RolePeer is another hv host: it may read this host's description and
	// move VMs here (the migration routes), nothing else: no VM list, no
	// exec, no console, no trust store. A host's certificate is root on
	// that host, not on this one.
	RolePeer = "peer"
)

// Roles lists the roles a token may give, for messages and completion.
var Roles = []string{RoleAdmin, RoleReadOnly, RolePeer}

// TrustedCertificate is a client certificate hvd trusts on its network API
// (GET /1.0/trust/certificates).
type TrustedCertificate struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint"` // SHA-256 of the certificate, 64 hex digits
	Role        string `json:"role"`
	// Subject is the common name the client put in its certificate: it says
	// who made it, nothing more (anyone may write anything there).
	Subject  string     `json:"subject"`
	AddedAt  time.Time  `json:"added_at"`
	AddedBy  string     `json:"added_by"`            // the network address it enrolled from
	LastSeen *time.Time `json:"last_seen,omitempty"` // its last request (kept to within minutes)
	NotAfter time.Time  `json:"not_after"`           // the certificate's own expiry
}

// TokenCreate asks for a join token (POST /1.0/trust/tokens).
type TokenCreate struct {
	// Name is the name the enrolled certificate gets on this host.
	Name string `json:"name"`
	// Role is admin (the default) or read-only.
	Role string `json:"role,omitempty"`
	// Expires is how long the token is valid, e.g. "1h" (the default), at most "168h".
	Expires string `json:"expires,omitempty"`
}

// Token is a join token: pending until a client enrolls with it, then gone.
type Token struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// Token is the opaque string to give the client, only in the answer to
	// POST /1.0/trust/tokens: hvd keeps a hash of its secret, never the token.
	Token string `json:"token,omitempty"`
	// Addresses and Fingerprint are what the token tells the client: where
	// this host listens and the certificate to expect there.
	Addresses   []string `json:"addresses"`
	Fingerprint string   `json:"fingerprint"`
}

// EnrollRequest enrolls the client certificate of the TLS connection it
// comes on (POST /1.0/trust/enroll).
type EnrollRequest struct {
	// Secret is the join token's secret, base64url without padding.
	Secret string `json:"secret"`
}

// Peer is another hv host this host is a client of (GET /1.0/peers).
type Peer struct {
	Name        string    `json:"name"`
	Address     string    `json:"address"`     // host:port of its network API
	Fingerprint string    `json:"fingerprint"` // its certificate, pinned
	AddedAt     time.Time `json:"added_at"`
	// TrustedAs is the name this host's certificate has on the peer.
	TrustedAs string `json:"trusted_as"`
	// Status is the result of asking the peer for its host information just
	// now: online, or unreachable (Error says why).
	Status   string `json:"status"`
	Error    string `json:"error,omitempty"`
	Hostname string `json:"hostname,omitempty"` // the peer's, when online
	Version  string `json:"version,omitempty"`  // the peer's hv version, when online
}

// Peer statuses.
const (
	PeerOnline      = "online"
	PeerUnreachable = "unreachable"
)

// PeerAdd makes this host a client of another host (POST /1.0/peers): hvd
// enrolls its own certificate there with the join token the other host made.
type PeerAdd struct {
	Name string `json:"name"`
	// Address is host:port of the peer's network API; empty: the token's addresses, in turn.
	Address string `json:"address,omitempty"`
	Token   string `json:"token"`
}
