"""Image transports (docker-daemon:, docker-archive:, oci:, docker://) read into one layered view."""
