import AegisGateway
import Testing

@Suite struct EnrollmentPolicyTests {
    let key = [UInt8](repeating: 1, count: 32)
    let otherKey = [UInt8](repeating: 2, count: 32)

    func decide(_ mode: EnrollmentPolicy, _ record: AgentRecord?, key presented: [UInt8]? = nil,
                token: Bool = false) -> EnrollmentDecision {
        mode.decide(record: record, presentedKey: presented ?? key, presentedTokenIsValid: token)
    }

    @Test func openModeIsTrustOnFirstUse() {
        // First use pins.
        #expect(decide(.open, nil) == .admit(firstUse: true, consumesToken: false))
        // Later the same key is admitted, another one is not.
        #expect(decide(.open, .active(publicKey: key)) == .admit(firstUse: false, consumesToken: false))
        #expect(decide(.open, .active(publicKey: key), key: otherKey) == .refuse(.keyMismatch))
        // A token changes nothing and is not consumed.
        #expect(decide(.open, nil, token: true) == .admit(firstUse: true, consumesToken: false))
    }

    @Test func tokenModeNeedsAValidTokenForUnknownAgents() {
        #expect(decide(.token, nil, token: false) == .refuse(.unknownAgent))
        #expect(decide(.token, nil, token: true) == .admit(firstUse: true, consumesToken: true))
        // Known agents need no token, and must match.
        #expect(decide(.token, .active(publicKey: key)) == .admit(firstUse: false, consumesToken: false))
        #expect(decide(.token, .active(publicKey: key), token: true) == .admit(firstUse: false, consumesToken: false))
        #expect(decide(.token, .active(publicKey: key), key: otherKey, token: true) == .refuse(.keyMismatch))
    }

    @Test func manualModeHoldsUnknownAgentsForApproval() {
        #expect(decide(.manual, nil) == .requestApproval)
        #expect(decide(.manual, nil, token: true) == .requestApproval)
        #expect(decide(.manual, .pending(publicKey: key)) == .refuse(.pendingApproval))
        #expect(decide(.manual, .pending(publicKey: key), key: otherKey) == .refuse(.keyMismatch))
        // Approved: admitted like any known agent.
        #expect(decide(.manual, .active(publicKey: key)) == .admit(firstUse: false, consumesToken: false))
        #expect(decide(.manual, .active(publicKey: key), key: otherKey) == .refuse(.keyMismatch))
    }

    @Test func pendingRecordsAfterAModeChange() {
        #expect(decide(.open, .pending(publicKey: key)) == .admit(firstUse: true, consumesToken: false))
        #expect(decide(.token, .pending(publicKey: key), token: true) == .admit(firstUse: true, consumesToken: true))
        #expect(decide(.token, .pending(publicKey: key), token: false) == .refuse(.pendingApproval))
        #expect(decide(.open, .pending(publicKey: key), key: otherKey) == .refuse(.keyMismatch))
    }

    @Test(arguments: EnrollmentPolicy.allCases)
    func revokedIsAlwaysRefused(mode: EnrollmentPolicy) {
        #expect(decide(mode, .revoked) == .refuse(.revoked))
        #expect(decide(mode, .revoked, key: otherKey, token: true) == .refuse(.revoked))
    }

    @Test func refusalsCarryTheirCodesAnd4003() {
        let codes = EnrollmentRefusal.allCases.map(\.code.rawValue)
        #expect(codes == ["key_mismatch", "revoked", "pending_approval", "unknown_agent"])
        for refusal in EnrollmentRefusal.allCases {
            #expect(refusal.closeCode.rawValue == 4003)
            #expect(!refusal.message.isEmpty)
        }
    }

    @Test func tokenSyntax() {
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        #expect(EnrollmentToken(alphabet) != nil)
        #expect(EnrollmentToken(String(repeating: "a", count: 16)) != nil)
        #expect(EnrollmentToken(String(repeating: "a", count: 256)) != nil)
        #expect(EnrollmentToken(String(repeating: "a", count: 15)) == nil)
        #expect(EnrollmentToken(String(repeating: "a", count: 257)) == nil)
        // Standard base64's extra characters, padding, spaces and non-ASCII are not b64u.
        for bad in ["aaaaaaaaaaaaaaa+", "aaaaaaaaaaaaaaa/", "aaaaaaaaaaaaaa==", "aaaaaaa aaaaaaaa", "aaaaaaaaaaaaaaaé", ""] {
            #expect(EnrollmentToken(bad) == nil, "\(bad)")
        }
        // Bad syntax is never looked up, so in token mode it means unknown_agent.
        let malformed = EnrollmentToken("not a token")
        #expect(decide(.token, nil, token: malformed != nil) == .refuse(.unknownAgent))
    }

    @Test func tokenIsNeverPrinted() throws {
        let token = try #require(EnrollmentToken("secret-token-0123456789"))
        #expect(!"\(token)".contains("secret"))
        #expect(!String(reflecting: token).contains("secret"))
    }

    @Test func modeNames() {
        #expect(EnrollmentPolicy(rawValue: "open") == .open)
        #expect(EnrollmentPolicy(rawValue: "token") == .token)
        #expect(EnrollmentPolicy(rawValue: "manual") == .manual)
        #expect(EnrollmentPolicy(rawValue: "Open") == nil)
    }
}
