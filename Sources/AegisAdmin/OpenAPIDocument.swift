/// The OpenAPI document (Resources/openapi.json), embedded in the binary
/// at build time so that the gateway serves exactly what is committed.
public enum OpenAPIDocument {
    public static var bytes: [UInt8] { PackageResources.openapi_json }
}
