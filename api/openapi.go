package api

import _ "embed"

// OpenAPI is the OpenAPI 3 description of this API, served at /1.0/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
