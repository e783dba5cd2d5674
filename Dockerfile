# projectord container image: a static binary on distroless, run as nonroot.
#
#   make docker                      # passes VERSION, COMMIT and DATE
#   docker build --build-arg VERSION=v1.2.3 --build-arg COMMIT=$(git rev-parse HEAD) \
#       --build-arg DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) -t projectord:v1.2.3 .
#
# The image reads /etc/projectord/projectord.yaml when no --config is given
# (mount it there) and the database URL from PROJECTORD_DATABASE_URL or, better,
# a mounted secret named by PROJECTORD_DATABASE_URL_FILE. See deploy/.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Empty values fall back to the module's build information ("dev", "unknown").
ARG VERSION=""
ARG COMMIT=""
ARG DATE=""
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.date=${DATE}" \
      -o /out/projectord ./cmd/projectord

# static-debian12: CA certificates, tzdata and /etc/passwd with nonroot
# (65532), nothing else: no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/projectord /projectord
# nonroot, by number: Kubernetes' runAsNonRoot can only verify a numeric user.
USER 65532:65532
# /metrics, /livez, /readyz, /status (http.listen, default :7464).
EXPOSE 7464
ENTRYPOINT ["/projectord"]
CMD ["run"]
