//! Who is calling: an authenticated API client and the companies it may act for.

use super::CompanyId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub client_id: String,
    /// Admin clients act for any company and manage DEFAULT configurations and clients.
    pub admin: bool,
    /// The companies a company-scoped client may act for; ignored for admins.
    pub companies: Vec<CompanyId>,
}

impl Principal {
    pub fn can_act_for(&self, company: &CompanyId) -> bool {
        self.admin || self.companies.iter().any(|c| c == company)
    }
}
