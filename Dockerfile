# vhd and vhdmount, static, in a minimal image. See docs/containers.md.
#
#   docker build -t vhdmount .
#   docker run --rm --device /dev/fuse --cap-add SYS_ADMIN \
#       --security-opt apparmor=unconfined \
#       -v /srv/images:/images \
#       --mount type=bind,source=/mnt/vhd,target=/mnt/vhd,bind-propagation=rshared \
#       vhdmount /images/disk.vhd /mnt/vhd
#   docker run --rm -v /srv/images:/images --entrypoint vhd vhdmount info /images/disk.vhd

FROM golang:1.24-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# No cgo: fully static binaries that need no libc in the final image.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false -o /out/vhd ./cmd/vhd \
 && CGO_ENABLED=0 go build -trimpath -buildvcs=false -o /out/vhdmount ./cmd/vhdmount

# distroless/static: no shell, no libc, no fusermount3. None is needed:
# vhdmount runs as root in the container and, given CAP_SYS_ADMIN and
# /dev/fuse, mounts and unmounts with mount(2)/umount(2) itself; fusermount3
# is a setuid helper for unprivileged users and would not help here anyway
# (without CAP_SYS_ADMIN in the container it cannot mount either).
FROM gcr.io/distroless/static-debian12
COPY --from=build /out/vhd /out/vhdmount /usr/local/bin/
# In the foreground: the container lives as long as the mount, and
# `docker stop` (SIGTERM) unmounts cleanly, syncing the image.
ENTRYPOINT ["/usr/local/bin/vhdmount", "-f"]
