module github.com/vhdmount/vhdmount

go 1.24

require github.com/google/uuid v1.6.0

require (
	github.com/hanwen/go-fuse/v2 v2.12.1
	golang.org/x/sys v0.28.0
)
