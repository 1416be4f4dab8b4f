package httpapi

// Roles are the services behind the API, one per role; in hvd,
// internal/host.Service and the features built on it (internal/feature/...)
// play them. A nil role is not served: its routes answer 501, so
// a test's fake implements only the roles it exercises.
type Roles struct {
	Host        Host
	VMs         VMs
	Guest       Guest
	Devices     Devices
	Disks       Disks
	Switches    Switches
	Checkpoints Checkpoints
	Transfers   Transfers
	Backups     Backups
	Moves       Moves
	Storage     Storage
	Migrations  Migrations
	Trust       Trust
	Peers       Peers
}
