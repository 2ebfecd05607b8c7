//! The loaded campaigns with their compiled templates.

use std::collections::HashMap;

use engager_ai::Templates;
use engager_domain::{Campaign, CampaignId};
use engager_store::Store;

use crate::campaign_file::{parse_campaign, CampaignFileError};

/// Why the catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] engager_store::StoreError),
    /// A stored campaign no longer parses.
    #[error(transparent)]
    File(#[from] CampaignFileError),
    /// A template does not compile.
    #[error("campaign {campaign}: {source}")]
    Template {
        /// The campaign slug.
        campaign: String,
        /// The template error.
        source: engager_ai::RenderError,
    },
}

/// Every campaign in the store, parsed, with templates compiled once.
#[derive(Debug)]
pub struct Catalog {
    campaigns: HashMap<CampaignId, Campaign>,
    templates: Templates,
}

impl Catalog {
    /// Loads and compiles every stored campaign.
    pub async fn load(store: &dyn Store) -> Result<Self, CatalogError> {
        let mut campaigns = HashMap::new();
        let mut templates = Templates::new();
        for record in store.campaigns().await? {
            let campaign = parse_campaign(
                &record.definition,
                &format!("campaign {}", record.slug),
                record.id,
            )?;
            compile(&mut templates, &campaign)?;
            campaigns.insert(record.id, campaign);
        }
        Ok(Self {
            campaigns,
            templates,
        })
    }

    /// A catalog of the given campaigns (used by tests and benchmarks).
    pub fn from_campaigns(list: Vec<Campaign>) -> Result<Self, CatalogError> {
        let mut templates = Templates::new();
        let mut campaigns = HashMap::new();
        for campaign in list {
            compile(&mut templates, &campaign)?;
            campaigns.insert(campaign.id, campaign);
        }
        Ok(Self {
            campaigns,
            templates,
        })
    }

    /// A campaign by id.
    pub fn get(&self, id: CampaignId) -> Option<&Campaign> {
        self.campaigns.get(&id)
    }

    /// A campaign by slug.
    pub fn by_slug(&self, slug: &str) -> Option<&Campaign> {
        self.campaigns.values().find(|c| c.slug == slug)
    }

    /// All campaigns, by id.
    pub fn all(&self) -> Vec<&Campaign> {
        let mut all: Vec<&Campaign> = self.campaigns.values().collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// The compiled templates.
    pub fn templates(&self) -> &Templates {
        &self.templates
    }
}

/// Compiles a campaign's templates (each A/B variant's too), failing on the first syntax
/// error.
pub fn compile(templates: &mut Templates, campaign: &Campaign) -> Result<(), CatalogError> {
    for step in &campaign.steps {
        let variants = step
            .variants
            .iter()
            .map(|v| (variant_template_name(&campaign.slug, &v.name), &v.template));
        for (name, template) in
            std::iter::once((campaign.slug.clone(), &step.template)).chain(variants)
        {
            templates
                .add_step(&name, step.index, template)
                .map_err(|source| CatalogError::Template {
                    campaign: campaign.slug.clone(),
                    source,
                })?;
        }
    }
    Ok(())
}

/// The name a variant's templates are compiled under.
pub fn variant_template_name(campaign: &str, variant: &str) -> String {
    format!("{campaign}~{variant}")
}

/// What a lead gets at a step: the compiled templates' name, the templates, and the A/B
/// variant's name when the step runs an experiment.
pub fn step_templates<'c>(
    campaign: &Campaign,
    step: &'c engager_domain::Step,
    lead: engager_domain::LeadId,
) -> (
    String,
    &'c engager_domain::campaign::StepTemplate,
    Option<&'c str>,
) {
    match step.variant_for(&campaign.slug, lead) {
        Some(v) => (
            variant_template_name(&campaign.slug, &v.name),
            &v.template,
            Some(v.name.as_str()),
        ),
        None => (campaign.slug.clone(), &step.template, None),
    }
}
