# Build: docker build -t airlay .
# Run:   docker run -p 8081:8081 -v "$PWD/config.ini:/etc/airlay/config.ini:ro" \
#          -v "$PWD/jwt.pem:/etc/airlay/jwt.pem:ro" airlay
# The config is mounted from outside; in it, use address = 0.0.0.0. The
# container runs as uid 65532: the mounted files must be readable by it
# (chmod 644; under umask 077 new files are 0600).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=0.1.0-dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/airlay/airlay/server.Version=${VERSION}" \
      -o /out/airlay-cli ./cmd/airlay-cli

# distroless/static: no shell, no libc, a writable /tmp, and the user
# "nonroot" (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/airlay-cli /usr/local/bin/airlay-cli
WORKDIR /etc/airlay
USER nonroot:nonroot
EXPOSE 8081
# No shell or curl here: the binary asks its own /healthz. It reads the
# port from /etc/airlay/config.ini (the working directory's config.ini).
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/airlay-cli", "web_socket", "health", "--config", "/etc/airlay/config.ini", "--timeout", "3s"]
ENTRYPOINT ["/usr/local/bin/airlay-cli", "web_socket", "server"]
CMD ["--config", "/etc/airlay/config.ini"]
