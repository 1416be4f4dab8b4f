package httpapi

import (
	"context"
	"io"
	"net/http"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/operation"
)

// Moves is the role that moves this host's VMs to other hosts.
type Moves interface {
	MoveVM(name string, req api.VMMove) (*operation.Op, error)
}

// Migrations is the role of a migration's target: the peer API a source
// host drives (see internal/feature/migration). source is the calling
// host's name: only the host that started a migration may drive it.
type Migrations interface {
	CreateMigration(ctx context.Context, source string, req api.MigrationCreate) (api.Migration, error)
	GetMigration(source, id string) (api.Migration, error)
	PutMigrationFile(ctx context.Context, source, id, name string, r io.Reader) error
	PrepareMigration(ctx context.Context, source, id string) (api.Migration, error)
	CommitMigration(ctx context.Context, source, id string, req api.MigrationCommit) (api.Migration, error)
	AbortMigration(ctx context.Context, source, id string) error
}

func (s *Server) moveRoutes() []route {
	return []route{
		{"POST", "/1.0/vms/{name}/move", s.moveVM},
	}
}

func (s *Server) migrationRoutes() []route {
	return []route{
		{"POST", "/1.0/migrations", s.createMigration},
		{"GET", "/1.0/migrations/{id}", s.getMigration},
		{"DELETE", "/1.0/migrations/{id}", s.abortMigration},
		{"PUT", "/1.0/migrations/{id}/files/{file}", streamedBody(s.putMigrationFile)},
		{"POST", "/1.0/migrations/{id}/prepare", s.prepareMigration},
		{"POST", "/1.0/migrations/{id}/commit", s.commitMigration},
	}
}

func (s *Server) moveVM(w http.ResponseWriter, r *http.Request) {
	var req api.VMMove
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.roles.Moves.MoveVM(r.PathValue("name"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

// callerName is the name of the host (or client) that made r: the name its
// certificate was trusted under, or "local" on the unix socket. A target
// keeps each migration to the caller that created it.
func callerName(r *http.Request) string {
	if c := caller(r.Context()); c != nil && c.Name != "" {
		return c.Name
	}
	return "local"
}

func (s *Server) createMigration(w http.ResponseWriter, r *http.Request) {
	var req api.MigrationCreate
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	m, err := s.roles.Migrations.CreateMigration(r.Context(), callerName(r), req)
	answer(w, m, err)
}

func (s *Server) getMigration(w http.ResponseWriter, r *http.Request) {
	m, err := s.roles.Migrations.GetMigration(callerName(r), r.PathValue("id"))
	answer(w, m, err)
}

func (s *Server) abortMigration(w http.ResponseWriter, r *http.Request) {
	err := s.roles.Migrations.AbortMigration(r.Context(), callerName(r), r.PathValue("id"))
	answer(w, struct{}{}, err)
}

func (s *Server) putMigrationFile(w http.ResponseWriter, r *http.Request) {
	err := s.roles.Migrations.PutMigrationFile(r.Context(), callerName(r), r.PathValue("id"), r.PathValue("file"), r.Body)
	answer(w, struct{}{}, err)
}

func (s *Server) prepareMigration(w http.ResponseWriter, r *http.Request) {
	m, err := s.roles.Migrations.PrepareMigration(r.Context(), callerName(r), r.PathValue("id"))
	answer(w, m, err)
}

func (s *Server) commitMigration(w http.ResponseWriter, r *http.Request) {
	var req api.MigrationCommit
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	m, err := s.roles.Migrations.CommitMigration(r.Context(), callerName(r), r.PathValue("id"), req)
	answer(w, m, err)
}
