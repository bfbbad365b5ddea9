// Package web holds the dashboard's templates and static files, embedded so
// the dinp binary serves them without a build step or files on disk.
package web

import "embed"

// Templates holds templates/*.html: layout.html plus one file per page.
//
//go:embed templates/*.html
var Templates embed.FS

// Static holds static/ (style sheet and the small dependency-free script).
//
//go:embed static
var Static embed.FS
