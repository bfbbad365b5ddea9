package common

// EvidenceLines is how many output lines of an instance an event or a
// failed deploy shows.
const EvidenceLines = 20
