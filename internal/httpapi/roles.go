package httpapi

// Roles are the services behind the API, one per role; internal/host.Service
// plays them all in hvd. A nil role is not served: its routes answer 501, so
// a test's fake implements only the roles it exercises.
type Roles struct {
	Host        Host
	VMs         VMs
	Guest       Guest
	Devices     Devices
	Disks       Disks
	Switches    Switches
	Checkpoints Checkpoints
	Backups     Backups
	Trust       Trust
	Peers       Peers
}
