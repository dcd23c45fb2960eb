# Build: docker build -t airlay .
# Run:   docker run -p 8081:8081 -v "$PWD/config.ini:/etc/airlay/config.ini:ro" \
#          -v "$PWD/jwt.pem:/etc/airlay/jwt.pem:ro" airlay
# The config is mounted from outside; in it, use address = 0.0.0.0.

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
ENTRYPOINT ["/usr/local/bin/airlay-cli", "web_socket", "server"]
CMD ["--config", "/etc/airlay/config.ini"]
