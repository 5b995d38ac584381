import AegisStore
import Hummingbird

/// The per-request context: Hummingbird's core storage and the API token
/// the request authenticated with (nil outside /api).
public struct AdminRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var token: ApiTokenRecord?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }

    /// Bodies are read by the handlers (capped at 1 MiB there).
    public var maxUploadSize: Int { 1 << 20 }
}
